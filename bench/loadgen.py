"""Closed-loop load: C concurrent workers for a fixed time; counts and latencies."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from dataclasses import dataclass
from typing import Awaitable, Callable


@dataclass
class Run:
    name: str
    ops: int  # operations (requests, or claimed commands for a claim run)
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        return percentile(sorted(self.latencies_ms), p)

    def row(self) -> dict:
        return {"name": self.name, "ops_per_s": round(self.rate, 1), "requests": self.requests,
                "ops": self.ops, "seconds": round(self.seconds, 2), "errors": self.errors,
                "p50_ms": round(self.pct(50), 2), "p99_ms": round(self.pct(99), 2),
                "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else 0}


def percentile(data: list[float], p: float) -> float:
    """The nearest-rank percentile of sorted data: of 100 values, p99 is the 99th (an
    earlier version took the 100th, the maximum)."""
    return data[max(0, math.ceil(p / 100 * len(data)) - 1)]


async def closed_loop(name: str, concurrency: int, seconds: float,
                      op: Callable[[int], Awaitable[int]], warmup_s: float = 0.5) -> Run:
    """`op(worker)` does one request and returns how many units of work it completed
    (1 for a request, n for n claimed commands; negative means an error). Only operations
    that start and end inside the measured window are counted."""
    phase = "warmup"
    ops = requests = errors = 0
    lat: list[float] = []

    async def worker(i: int) -> None:
        nonlocal ops, requests, errors
        while phase != "stop":
            measured = phase == "measure"
            t0 = time.perf_counter()
            n = await op(i)
            if measured and phase == "measure":
                lat.append((time.perf_counter() - t0) * 1000)
                requests += 1
                if n < 0:
                    errors += 1
                else:
                    ops += n

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup_s)
    phase = "measure"
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    phase = "stop"
    elapsed = time.perf_counter() - started
    await asyncio.gather(*tasks)
    return Run(name, ops, requests, elapsed, lat, errors)


async def poll_once(session, base: str, agent: dict, limit: int, claims: bool) -> int:
    """One agent's poll (no wait): the commands it claimed when `claims`, else 1; -1 when
    refused. What closed_loop's `op` is made of in the poll and claim benchmarks."""
    async with session.get(f"{base}/api/v1/agents/{agent['agent_id']}/commands?limit={limit}",
                           headers=agent["headers"]) as resp:
        body = await resp.read()
        if resp.status != 200:
            return -1
        return len(json.loads(body)["commands"]) if claims else 1
