"""Replicas of one service, spread round-robin; a replica that refused a connection is
skipped for `cooldown_s` (unless every replica is cooling down)."""

from __future__ import annotations

import time


class Upstream:
    def __init__(self, name: str, urls: tuple[str, ...], cooldown_s: float = 5.0):
        if not urls:
            raise ValueError(f"no replicas configured for {name}")
        self.name, self.urls, self.cooldown_s = name, urls, cooldown_s
        self._next = 0
        self._down_until: dict[str, float] = {}

    def candidates(self) -> list[str]:
        """Every replica once, starting at the next in turn, healthy ones first."""
        start = self._next
        self._next = (self._next + 1) % len(self.urls)
        order = [self.urls[(start + i) % len(self.urls)] for i in range(len(self.urls))]
        now = time.monotonic()
        healthy = [u for u in order if self._down_until.get(u, 0.0) <= now]
        cooling = [u for u in order if u not in healthy]
        return healthy + cooling

    def mark_down(self, url: str) -> None:
        self._down_until[url] = time.monotonic() + self.cooldown_s

    def mark_up(self, url: str) -> None:
        self._down_until.pop(url, None)
