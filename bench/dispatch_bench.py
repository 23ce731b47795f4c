"""Dispatch: empty polls/s and claims/s through HTTP, side by side with a raw asyncpg loop
running the same CLAIM statement at the same concurrency. The ratio is the figure."""

from __future__ import annotations

import asyncio
import json
import random
import uuid

import aiohttp
import asyncpg

from bench.harness import (
    database_url,
    print_table,
    ratio_summary,
    seed_agents,
    seed_backlog,
    start_stack,
    write_result,
)
from bench.loadgen import Run, closed_loop, poll_once
from services.dispatch.app import DB_SETTINGS
from services.dispatch.lifecycle import queries as q

CONCURRENCY = 32
SECONDS = 5.0
AGENTS = 1000
LIMIT = 10
ROUNDS = 3


async def _http_run(name: str, base: str, agents: list[dict], claims: bool) -> Run:
    rng = random.Random(1)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def op(i: int) -> int:
            return await poll_once(session, base, agents[rng.randrange(len(agents))], LIMIT, claims)

        return await closed_loop(name, CONCURRENCY, SECONDS, op)


async def _raw_run(name: str, dsn: str, agents: list[dict], claims: bool) -> Run:
    rng = random.Random(1)
    ids = [uuid.UUID(a["agent_id"]) for a in agents]

    async def init(conn):
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    pool = await asyncpg.create_pool(dsn, min_size=CONCURRENCY, max_size=CONCURRENCY, init=init,
                                     server_settings=DB_SETTINGS)
    try:
        async def op(i: int) -> int:
            rows = await pool.fetch(q.CLAIM, ids[rng.randrange(len(ids))], LIMIT)
            return sum(1 for r in rows if r["id"] is not None) if claims else 1

        return await closed_loop(name, CONCURRENCY, SECONDS, op)
    finally:
        await pool.close()


def run() -> dict:
    stack = start_stack()
    try:
        dsn = database_url(stack)
        agents = seed_agents(stack, AGENTS)
        dispatch = stack.dispatch_urls[0]
        runs: dict[str, list[Run]] = {"empty_raw": [], "empty_http": [], "claim_raw": [], "claim_http": []}
        for _ in range(ROUNDS):  # interleaved rounds: noise hits both sides alike
            seed_backlog(stack, agents, 0)
            runs["empty_raw"].append(asyncio.run(_raw_run("empty polls, raw asyncpg", dsn, agents, False)))
            runs["empty_http"].append(asyncio.run(_http_run("empty polls, HTTP to dispatch", dispatch, agents, False)))
            seed_backlog(stack, agents, 120)
            runs["claim_raw"].append(asyncio.run(_raw_run("claims, raw asyncpg", dsn, agents, True)))
            seed_backlog(stack, agents, 120)
            runs["claim_http"].append(asyncio.run(_http_run("claims, HTTP to dispatch", dispatch, agents, True)))
    finally:
        stack.stop()

    median = {k: sorted(v, key=lambda r: r.rate)[len(v) // 2] for k, v in runs.items()}
    rows = [median[k].row() for k in ("empty_raw", "empty_http", "claim_raw", "claim_http")]
    ratios = {
        "empty_polls_http_over_raw": ratio_summary(runs["empty_http"], runs["empty_raw"]),
        "claims_http_over_raw": ratio_summary(runs["claim_http"], runs["claim_raw"]),
    }
    print_table(f"dispatch: {CONCURRENCY} concurrent, {AGENTS} agents, limit {LIMIT}, {SECONDS:.0f} s, "
                f"median of {ROUNDS} rounds", rows, ["name", "ops_per_s", "p50_ms", "p99_ms", "errors"])
    for name, r in ratios.items():
        print(f"{name}: median {r['median']} (range {r['min']}-{r['max']} over {r['rounds']} rounds)")
    result = {"concurrency": CONCURRENCY, "agents": AGENTS, "limit": LIMIT, "seconds": SECONDS,
              "rows": rows, "ratios": ratios,
              "all_runs": {k: [r.row() for r in v] for k, v in runs.items()}}
    write_result("dispatch", result)
    return result


if __name__ == "__main__":
    run()
