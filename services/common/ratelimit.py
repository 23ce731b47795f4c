"""Rate limits with `limits`; memory or Redis storage, chosen by one URL.

The sliding-window-counter strategy: two counters per key, so it is O(1) in memory and in
Redis. (The moving window keeps every hit, and `limits`' memory storage expires those with
one thread-pool call per key: 11 % of a poll's CPU with 1,000 agents.)"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from services.common.errors import ApiError


class ThrottledMemoryStorage(MemoryStorage):
    """`limits`' memory storage, with its expiry pass run at most once a second.

    Upstream reschedules a pass over *every* key as soon as the previous one ends, on every
    hit: 13 % of a poll's CPU at 1,000 agents, and growing with the fleet (measured,
    bench/dispatch_bench.py, empty polls fell 3.4k -> 2.5k/s over 20 s). Reads check
    expiry themselves, so the pass is only garbage collection and may run less often.
    """

    GC_EVERY_S = 1.0
    _last_gc = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:  # the base's private hook
        now = time.monotonic()
        if now - self._last_gc >= self.GC_EVERY_S:
            self._last_gc = now
            await super()._MemoryStorage__schedule_expiry()



def make_storage(url: str) -> Storage:
    # The async storages are spelled async+<scheme>; redis-py is the Redis client we ship.
    if url.startswith(("redis://", "rediss://")):
        return storage_from_string("async+" + url, implementation="redispy")
    return ThrottledMemoryStorage(url)


class RateLimit:
    """One named limit (e.g. `agent_checkin`) shared by every replica using the storage."""

    def __init__(self, name: str, spec: str, storage: Storage):
        self.name = name
        self.item: RateLimitItem = parse(spec)
        self.limiter = SlidingWindowCounterRateLimiter(storage)

    async def check(self, key: str) -> dict[str, str]:
        """Count one hit for `key`; raise `429 rate_limited` once the window is full.
        Returns the X-RateLimit-* headers for a successful response."""
        allowed = await self.limiter.hit(self.item, self.name, key)
        stats = await self.limiter.get_window_stats(self.item, self.name, key)
        now = time.time()
        reset_in = max(1, math.ceil(stats.reset_time - now))
        headers = {
            "X-RateLimit-Limit": str(self.item.amount),
            "X-RateLimit-Remaining": str(max(0, stats.remaining)),
            "X-RateLimit-Reset": str(math.ceil(stats.reset_time)),
        }
        if not allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"Too many requests for {self.name}; retry after {reset_in} s.",
                headers={**headers, "Retry-After": str(reset_in)},
            )
        return headers
