"""Replica scaling: empty polls/s and claims/s with 1, 2 and 4 dispatch replicas, each held
to a quarter of a core by a CPU quota (cgroup v1 `cpu.cfs_quota_us`, as root), the load
generator and PostgreSQL in groups of their own without a quota. The ratio
throughput(N) / (N * throughput(1)) says whether replicas add up (goal: >= 0.9).

The load generator talks to the replicas directly, round robin, 8 connections per replica
(the gateway would be a shared part of its own); PostgreSQL durable. Three rounds per N,
fresh processes per N. The shared parts' CPU (PostgreSQL, the load generator) is reported
beside: they must stay under half busy for the ratio to be about dispatch."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from pathlib import Path

import aiohttp
import psutil

from bench.harness import print_table, seed_agents, seed_backlog, start_stack, write_result
from bench.loadgen import Run, closed_loop, poll_once

CGROUP = Path("/sys/fs/cgroup/cpu")
# A quarter of a core, granted in 5 ms slices of every 20 ms: with the default 100 ms
# period a replica that used its 25 ms early stood still for up to 75 ms, and every p99
# was 60-80 ms whatever the load (measured).
QUOTA_US, PERIOD_US = 5_000, 20_000
REPLICAS = (1, 2, 4)
ROUNDS = 3
SECONDS = 5.0
PER_REPLICA = 8
AGENTS = 1000


def _group(name: str, quota_us: int, pids: list[int]) -> Path:
    path = CGROUP / f"fleetline-bench-{name}"
    path.mkdir(exist_ok=True)
    (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
    (path / "cpu.cfs_quota_us").write_text(str(quota_us))
    for pid in pids:
        (path / "cgroup.procs").write_text(str(pid))
    return path


def _release(groups: list[Path]) -> None:
    for path in groups:
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                (CGROUP / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        path.rmdir()


def _cpu(pids: list[int]) -> dict[int, float]:
    seen = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            seen[pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return seen


def _used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings: processes born meanwhile count whole, those that
    ended meanwhile are lost (PostgreSQL backends come and go; an undercount, never < 0)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


async def _load(urls: list[str], agents: list[dict], claims: bool) -> Run:
    rng = random.Random()
    concurrency = PER_REPLICA * len(urls)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def op(i: int) -> int:
            return await poll_once(session, urls[i % len(urls)], agents[rng.randrange(len(agents))], 10, claims)
        return await closed_loop("claims" if claims else "empty polls", concurrency, SECONDS, op)


def _one(n: int) -> list[dict]:
    stack = start_stack(replicas=n)
    groups: list[Path] = []
    out = []
    try:
        agents = seed_agents(stack, AGENTS)
        dispatch = [c.proc.pid for c in stack.children if c.name.startswith("dispatch-")]
        pg_root = psutil.Process(stack.pg.proc.pid)
        pg = [pg_root.pid, *(c.pid for c in pg_root.children(recursive=True))]
        groups = [_group(f"dispatch-{i}", QUOTA_US, [pid]) for i, pid in enumerate(dispatch)]
        groups.append(_group("postgres", -1, pg))
        groups.append(_group("loadgen", -1, [os.getpid()]))
        for kind in ("empty polls", "claims"):
            for _ in range(ROUNDS):
                seed_backlog(stack, agents, 200 if kind == "claims" else 0)
                def pg_pids() -> list[int]:
                    return [pg_root.pid, *(c.pid for c in pg_root.children(recursive=True))]

                c0, p0, l0, t0 = _cpu(dispatch), _cpu(pg_pids()), _cpu([os.getpid()]), time.monotonic()
                run = asyncio.run(_load(stack.dispatch_urls, agents, kind == "claims"))
                wall = time.monotonic() - t0
                out.append({"replicas": n, "kind": kind, "rate": run.rate, "p99_ms": run.pct(99),
                            "dispatch_cores": _used(c0, _cpu(dispatch)) / wall,
                            "postgres_cores": _used(p0, _cpu(pg_pids())) / wall,
                            "loadgen_cores": _used(l0, _cpu([os.getpid()])) / wall})
    finally:
        _release(groups)
        stack.stop()
    return out


def run() -> dict:
    if not (CGROUP / "cgroup.procs").exists() or os.geteuid() != 0:
        raise SystemExit("replicas bench: needs root and cgroup v1's cpu controller at /sys/fs/cgroup/cpu")
    runs = [r for n in REPLICAS for r in _one(n)]
    rows = []
    for kind in ("empty polls", "claims"):
        base = statistics.median(r["rate"] for r in runs if r["replicas"] == 1 and r["kind"] == kind)
        for n in REPLICAS:
            mine = [r for r in runs if r["replicas"] == n and r["kind"] == kind]
            rate = statistics.median(r["rate"] for r in mine)
            rows.append({"kind": kind, "replicas": n, "per_s": round(rate), "scaling": round(rate / (n * base), 3),
                         "range": f"{min(r['rate'] for r in mine):.0f}-{max(r['rate'] for r in mine):.0f}",
                         "p99_ms": round(statistics.median(r["p99_ms"] for r in mine), 1),
                         "dispatch_cores": round(statistics.median(r["dispatch_cores"] for r in mine), 2),
                         "postgres_cores": round(statistics.median(r["postgres_cores"] for r in mine), 2),
                         "loadgen_cores": round(statistics.median(r["loadgen_cores"] for r in mine), 2)})
    print_table(f"replicas, each a quarter core (cfs quota), {PER_REPLICA} connections per replica, {SECONDS:.0f} s, "
                f"median of {ROUNDS}", rows,
                ["kind", "replicas", "per_s", "scaling", "range", "p99_ms", "dispatch_cores", "postgres_cores",
                 "loadgen_cores"])
    result = {"quota": f"{QUOTA_US}/{PERIOD_US}", "rounds": ROUNDS, "seconds": SECONDS, "rows": rows, "all": runs}
    write_result("replicas", result)
    return result


if __name__ == "__main__":
    run()
