"""The agent's timing policies, as pure functions of their inputs and a random source.

- Jitter before each poll: uniform in [0, min(interval / 2, 30 s)], so a fleet restarted
  at once does not poll in lockstep.
- Backoff after a failure (connection error, 5xx, 429): attempt n (1, 2, ...) waits a
  uniform time in [10 s, min(300 s, 10 s * 2^n)] ("full jitter" above a floor); a server's
  Retry-After wins when it is longer. A success resets the attempt count.
"""

from __future__ import annotations

import random

JITTER_CAP_S = 30.0
BACKOFF_FLOOR_S = 10.0
BACKOFF_CAP_S = 300.0


def poll_jitter(interval_s: float, rng: random.Random) -> float:
    return rng.uniform(0.0, min(max(interval_s, 0.0) / 2.0, JITTER_CAP_S))


def backoff_ceiling(attempt: int) -> float:
    """The longest wait of attempt n (n >= 1), without overflowing for huge n."""
    if attempt >= 6:  # 10 * 2^5 = 320 > 300 already
        return BACKOFF_CAP_S
    return min(BACKOFF_CAP_S, BACKOFF_FLOOR_S * 2 ** max(attempt, 1))


def backoff_delay(attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
    delay = rng.uniform(BACKOFF_FLOOR_S, backoff_ceiling(attempt))
    if retry_after_s is not None and retry_after_s > delay:
        return retry_after_s
    return delay


class Backoff:
    """Counts consecutive failures; the delays themselves come from backoff_delay()."""

    def __init__(self, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self, retry_after_s: float | None = None) -> float:
        self.attempt += 1
        return backoff_delay(self.attempt, self.rng, retry_after_s)

    def reset(self) -> None:
        self.attempt = 0


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the only form Fleetline sends); anything else is ignored."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 86400 else None
