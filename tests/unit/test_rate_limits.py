"""The in-process rate-limit storage: limits hold, windows end, and garbage collection is
throttled (the reason this storage exists)."""

import asyncio

import pytest

from services.common.errors import ApiError
from services.common.ratelimit import RateLimit, WindowCounterMemory


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def hits(limit: RateLimit, key: str, n: int) -> tuple[int, int]:
    async def run():
        ok = refused = 0
        for _ in range(n):
            try:
                await limit.check(key)
                ok += 1
            except ApiError as exc:
                assert exc.status == 429 and int(exc.headers["Retry-After"]) >= 1
                refused += 1
        return ok, refused

    return asyncio.run(run())


def test_a_limit_admits_exactly_its_amount_per_key():
    storage = WindowCounterMemory(Clock())
    limit = RateLimit("agent_checkin", "10/minute", storage)
    assert hits(limit, "a", 15) == (10, 5)
    assert hits(limit, "b", 3) == (3, 0)  # keys are independent


def test_a_full_window_opens_again_once_it_has_slid_past():
    clock = Clock()
    limit = RateLimit("agent_checkin", "10/minute", WindowCounterMemory(clock))
    assert hits(limit, "a", 10) == (10, 0)
    clock.now += 60 * 2  # two windows later nothing of the old counts is left
    assert hits(limit, "a", 10) == (10, 0)


def test_garbage_collection_runs_at_most_once_per_interval_yet_collects():
    clock = Clock()
    storage = WindowCounterMemory(clock)
    limit = RateLimit("agent_checkin", "10/second", storage)
    for i in range(500):
        hits(limit, f"agent-{i}", 1)
    assert storage.gc_passes == 1  # 500 hits in one instant: one pass, not 500
    assert len(storage._counts) == 500
    clock.now += 10
    hits(limit, "another", 1)
    assert storage.gc_passes == 2
    assert len(storage._counts) == 1  # every expired counter went in that one pass


@pytest.mark.parametrize("spec", ["1/second", "5/minute", "100/hour"])
def test_the_headers_count_down(spec):
    limit = RateLimit("x", spec, WindowCounterMemory(Clock()))
    first = asyncio.run(limit.check("k"))
    second = asyncio.run(limit.check("k")) if spec != "1/second" else None
    assert first["X-RateLimit-Limit"] == spec.split("/")[0]
    if second:
        assert int(second["X-RateLimit-Remaining"]) == int(first["X-RateLimit-Remaining"]) - 1


def test_memory_storage_still_expires_windows():
    """The memory storage's garbage collection is throttled; its windows must still end."""
    import asyncio
    import time

    from services.common.errors import ApiError
    from services.common.ratelimit import RateLimit, make_storage

    async def allowed(limit: RateLimit) -> bool:
        try:
            await limit.check("k")
            return True
        except ApiError as exc:
            assert exc.code == "rate_limited"
            return False

    async def scenario() -> float:
        limit = RateLimit("t", "2/second", make_storage("memory://"))
        assert await allowed(limit) and await allowed(limit)
        started = time.monotonic()
        assert not await allowed(limit)  # a third hit within the second
        while not await allowed(limit):  # until the sliding counter forgets (polled, not slept)
            assert time.monotonic() - started < 3, "the window never ended"
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 3
