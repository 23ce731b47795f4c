"""Rate limits with `limits`; memory or Redis storage, chosen by one URL.

The sliding-window-counter strategy: two counters per key, so it is O(1) in memory and in
Redis. (The moving window keeps every hit, and `limits`' memory storage expires those with
one thread-pool call per key: 11 % of a poll's CPU with 1,000 agents.)"""

from __future__ import annotations

import contextlib
import math
import time
from typing import AsyncIterator, Callable

from limits import RateLimitItem, parse
from limits.aio.storage import SlidingWindowCounterSupport, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from limits.storage.base import TimestampedSlidingWindow

from services.common.errors import ApiError


class WindowCounterMemory(Storage, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """In-process counters for the sliding-window-counter strategy (one replica).

    Ours rather than `limits`' MemoryStorage: that one starts a pass over *every* key on
    every hit, 13 % of a poll's CPU at 1,000 agents and growing with the fleet (measured,
    bench/dispatch_bench.py). Here reads check expiry themselves, so the pass is only
    garbage collection and runs at most once per GC_EVERY_S. The window arithmetic is
    limits' own (previous count weighted by what is left of it, plus the current count);
    one event loop and no await inside a hit make each hit atomic.
    """

    STORAGE_SCHEME = None
    GC_EVERY_S = 1.0

    def __init__(self, clock: Callable[[], float] = time.time):
        super().__init__()
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._expires: dict[str, float] = {}
        self._next_gc = 0.0
        self.gc_passes = 0

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def _collect(self, now: float) -> None:
        if now < self._next_gc:
            return
        self._next_gc = now + self.GC_EVERY_S
        self.gc_passes += 1
        for key in [k for k, t in self._expires.items() if t <= now]:
            del self._expires[key]
            self._counts.pop(key, None)

    def _count(self, key: str, now: float) -> int:
        return self._counts.get(key, 0) if self._expires.get(key, 0.0) > now else 0

    def _add(self, key: str, expiry: float, amount: int, now: float) -> int:
        count = self._count(key, now)
        if count == 0:  # a new (or expired) counter starts its own lifetime
            self._expires[key] = now + expiry
        self._counts[key] = count + amount
        return count + amount

    def _window(self, key: str, expiry: int, now: float) -> tuple[int, float, int, float]:
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous, current = self._count(previous_key, now), self._count(current_key, now)
        previous_ttl = 0.0 if previous == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous, previous_ttl, current, current_ttl

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self._clock()
        self._collect(now)
        return self._add(key, expiry, amount, now)

    async def get(self, key: str) -> int:
        return self._count(key, self._clock())

    async def get_expiry(self, key: str) -> float:
        return self._expires.get(key, self._clock())

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self._counts)
        self._counts.clear()
        self._expires.clear()
        return count

    async def clear(self, key: str) -> None:
        self._counts.pop(key, None)
        self._expires.pop(key, None)

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int,
                                           amount: int = 1) -> bool:
        now = self._clock()
        self._collect(now)
        previous, previous_ttl, current, _ = self._window(key, expiry, now)
        if amount > limit or math.floor(previous * previous_ttl / expiry + current) + amount > limit:
            return False
        self._add(self.sliding_window_keys(key, expiry, now)[1], 2 * expiry, amount, now)
        return True

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        return self._window(key, expiry, self._clock())

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        for k in self.sliding_window_keys(key, expiry, self._clock()):
            await self.clear(k)


def make_storage(url: str) -> Storage:
    # The async storages are spelled async+<scheme>; redis-py is the Redis client we ship.
    if url.startswith(("redis://", "rediss://")):
        storage = storage_from_string("async+" + url, implementation="redispy")
        assert isinstance(storage, Storage)  # an async+ scheme gives an async storage
        return storage
    return WindowCounterMemory()


class RateLimit:
    """One named limit (e.g. `agent_checkin`) shared by every replica using the storage."""

    def __init__(self, name: str, spec: str, storage: Storage):
        self.name = name
        self.item: RateLimitItem = parse(spec)
        self.limiter = SlidingWindowCounterRateLimiter(storage)

    async def ensure_room(self, key: str) -> None:
        """`429 rate_limited` when `key`'s window is already full; counts nothing (with
        `count`, for limits on failures only, such as sign-ins)."""
        if not await self.limiter.test(self.item, self.name, key):
            stats = await self.limiter.get_window_stats(self.item, self.name, key)
            reset_in = max(1, math.ceil(stats.reset_time - time.time()))
            raise ApiError(429, "rate_limited", f"Too many attempts for {self.name}; retry after {reset_in} s.",
                           headers={"Retry-After": str(reset_in)})

    async def count(self, key: str) -> None:
        await self.limiter.hit(self.item, self.name, key)

    @contextlib.asynccontextmanager
    async def failures(self, *keys: str, counted: tuple[type[BaseException], ...]) -> AsyncIterator[None]:
        """A limit on what fails (a guesser's refusals): `429` while any key's window is
        full of failures; one of `counted` raised inside counts against every key, and
        nothing else counts at all."""
        for key in keys:
            await self.ensure_room(key)
        try:
            yield
        except counted:
            for key in keys:
                await self.count(key)
            raise

    @contextlib.asynccontextmanager
    async def successes(self, key: str) -> AsyncIterator[None]:
        """A ceiling on what succeeds: `429` while the key's window is full; only a block
        that ends without an exception counts (approximately: requests already inside
        when the window fills still count)."""
        await self.ensure_room(key)
        yield
        await self.count(key)

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
