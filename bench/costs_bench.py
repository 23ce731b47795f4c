"""What one operation costs, measured through the gateway with PostgreSQL durable: CPU in
dispatch, in the gateway and in PostgreSQL, transactions and WAL bytes, per operation.
These are the inputs of the capacity model in docs/scaling.md.

Operations (each a fixed number, 16 concurrent, after a warm-up):
- an empty poll (`wait=0`, nothing due);
- a claim (a poll taking 10 due commands), counted per command claimed;
- an ack and a result, per command;
- queueing a command (`POST /admin/commands`, with its audit event);
- a job target (`POST /admin/jobs` over 1,000 agents), per target.
CPU is read from the processes (psutil: dispatch, the gateway, every PostgreSQL process);
transactions from pg_stat_database (read after its statistics have been flushed), WAL from
pg_current_wal_lsn()."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import psutil
import psycopg

from bench.harness import (
    database_url,
    print_table,
    seed_agents,
    seed_backlog,
    start_stack,
    write_result,
)

AGENTS = 1000
CONCURRENCY = 16
STATS_LAG_S = 11.0  # a backend reports its statistics within ~10 s of going idle


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _postgres_pids(stack) -> list[int]:
    root = psutil.Process(stack.pg.proc.pid)
    return [root.pid, *(c.pid for c in root.children(recursive=True))]


def _db(url: str) -> tuple[int, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        xacts = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                             "WHERE datname = current_database()").fetchone()[0]
        lsn = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]
    return int(xacts), int(lsn)


async def _run(n: int, request) -> int:
    """n requests, CONCURRENCY at a time; returns how many units they did."""
    done = 0
    queue = list(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        async def worker() -> None:
            nonlocal done
            while queue:
                queue.pop()
                units = await request(session)
                done += units  # not `done += await ...`: that reads `done` before the await
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done


def run() -> dict:
    stack = start_stack()
    rows = []
    try:
        url = database_url(stack)
        gw = stack.gateway_url
        agents = seed_agents(stack, AGENTS)
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        dispatch_pid = next(c.proc.pid for c in stack.children if c.name == "dispatch-1")
        gateway_pid = next(c.proc.pid for c in stack.children if c.name == "gateway")
        rng = random.Random(3)

        def poll(limit: int):
            async def request(session) -> int:
                a = rng.choice(agents)
                async with session.get(f"{gw}/api/v1/agents/{a['agent_id']}/commands?limit={limit}",
                                       headers=a["headers"]) as r:
                    body = await r.json()
                    for c in body["commands"]:
                        claimed.append((a, c["id"]))
                    return len(body["commands"]) if limit > 1 else 1
            return request

        claimed: list = []

        def report(kind: str):
            async def request(session) -> int:
                a, cid = claimed.pop()
                path = f"{gw}/api/v1/agents/{a['agent_id']}/commands/{cid}/{kind}"
                body = {"status": "succeeded", "exit_code": 0, "output": "pong"} if kind == "result" else None
                async with session.post(path, headers=a["headers"], json=body) as r:
                    await r.read()
                    if kind == "ack":
                        acked.append((a, cid))
                    return 1 if r.status == 200 else 0
            return request

        acked: list = []

        async def queue(session) -> int:
            async with session.post(f"{gw}/api/v1/admin/commands", headers=admin,
                                    json={"agent_id": rng.choice(agents)["agent_id"], "type": "ping"}) as r:
                await r.read()
                return 1 if r.status == 201 else 0

        async def job(session) -> int:
            async with session.post(f"{gw}/api/v1/admin/jobs", headers=admin,
                                    json={"selector": {"all_active": True}, "command": {"type": "ping"}}) as r:
                body = await r.json()
                return body.get("target_count", 0) if r.status == 201 else 0

        def measure(name: str, unit: str, n: int, request, before=None) -> None:
            if before:
                before()
            asyncio.run(_run(min(n, 200), request))  # warm-up
            time.sleep(STATS_LAG_S)
            x0, w0 = _db(url)
            c0 = (_cpu([dispatch_pid]), _cpu([gateway_pid]), _cpu(_postgres_pids(stack)))
            started = time.monotonic()
            units = asyncio.run(_run(n, request))
            elapsed = time.monotonic() - started
            c1 = (_cpu([dispatch_pid]), _cpu([gateway_pid]), _cpu(_postgres_pids(stack)))
            time.sleep(STATS_LAG_S)
            x1, w1 = _db(url)
            x1 -= 2  # this function's own two reads
            per = max(units, 1)
            rows.append({"operation": name, "unit": unit, "units": units,
                         "units_per_s": round(units / elapsed),
                         "dispatch_cpu_us": round(1e6 * (c1[0] - c0[0]) / per),
                         "gateway_cpu_us": round(1e6 * (c1[1] - c0[1]) / per),
                         "postgres_cpu_us": round(1e6 * (c1[2] - c0[2]) / per),
                         "transactions": round((x1 - x0) / per, 3),
                         "wal_bytes": round((w1 - w0) / per)})

        seed_backlog(stack, agents, 0)
        measure("empty poll", "poll", 4000, poll(1))
        seed_backlog(stack, agents, 30)
        claimed.clear()
        measure("claim (poll taking 10)", "command", 1500, poll(10))
        measure("ack", "command", 4000, report("ack"))
        claimed[:] = acked
        measure("result", "command", 4000, report("result"))
        seed_backlog(stack, agents, 0)
        measure("queue a command (+ audit event)", "command", 3000, queue)
        seed_backlog(stack, agents, 0)
        measure("job target (jobs of 1,000)", "target", 8, job)
    finally:
        stack.stop()
    print_table(f"per-operation costs through the gateway, {CONCURRENCY} concurrent, PostgreSQL durable "
                "(CPU in microseconds per unit)", rows,
                ["operation", "unit", "units", "units_per_s", "dispatch_cpu_us", "gateway_cpu_us", "postgres_cpu_us",
                 "transactions", "wal_bytes"])
    result = {"concurrency": CONCURRENCY, "agents": AGENTS, "rows": rows}
    write_result("costs", result)
    return result


if __name__ == "__main__":
    run()
