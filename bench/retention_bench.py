"""Retention: claims while the pruner deletes a backlog of finished commands, against no
pruning in the same run; the pruner's rows/s; the tables' sizes before and after.

A stack with 1,000 agents, a claimable backlog for them, and BACKLOG finished commands
(each with its delivery row) that ended 40 days ago. Agents at work through dispatch over
HTTP (32 concurrent: a poll claiming up to 10, then a result for each) run in 5 s windows: before pruning, while a pruner
(the shipped one, batches of 1,000 with its pause, its own connection, as any replica
runs it) deletes the backlog, and after. Its own interval is set far off so that the
stack's dispatch does not prune on its own."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import threading
import time

import aiohttp
import psycopg

from bench.harness import (
    _a_signature,
    database_url,
    print_table,
    seed_agents,
    start_stack,
    write_result,
)
from bench.loadgen import Run, closed_loop
from fleetline.settings import postgres_url
from services.dispatch.app import DB_SETTINGS
from services.dispatch.retention.pruner import Pruner

BACKLOG = 1_000_000
AGENTS = 1000
PENDING_PER_AGENT = 500  # enough for every window
DURING_WINDOWS = 3  # then the pruner finishes alone
CONCURRENCY = 32
WINDOW_S = 5.0
TABLES = ("commands", "deliveries", "command_output")


def _seed(url: str, agents: list[dict], signature: str) -> None:
    ids = [a["agent_id"] for a in agents]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO commands (id, agent_id, type, status, max_retries, ack_timeout_s, run_timeout_s,
                                     expires_at, visible_at, created_at, sent_at, finished_at, delivery_count,
                                     result)
               SELECT gen_random_uuid(), (%s::uuid[])[1 + g %% %s], 'ping', 'succeeded', 5, 300, 3600,
                      now() - interval '39 days', now() - interval '40 days', now() - interval '40 days',
                      now() - interval '40 days', now() - interval '40 days' + make_interval(secs => g %% 86400),
                      1, '{"exit_code": 0, "output": "pong", "started_at": null, "finished_at": null}'
                 FROM generate_series(1, %s) g""", (ids, len(ids), BACKLOG))
        conn.execute("INSERT INTO deliveries (command_id, delivery, delivered_at) "
                     "SELECT id, 1, sent_at FROM commands WHERE status = 'succeeded'")
        conn.execute(
            """INSERT INTO commands (id, agent_id, type, max_retries, ack_timeout_s, run_timeout_s,
                                     expires_at, visible_at, created_at, signed)
               SELECT gen_random_uuid(), a::uuid, 'ping', 5, 3600, 3600, now() + interval '1 day',
                      now(), now() - make_interval(secs => g), %s::jsonb
                 FROM unnest(%s::text[]) a, generate_series(1, %s) g""", (signature, ids, PENDING_PER_AGENT))
        conn.execute("VACUUM ANALYZE commands")
        conn.execute("VACUUM ANALYZE deliveries")


def _sizes(url: str) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        return {t: conn.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0] // (1024 * 1024)
                for t in TABLES} | {"finished_commands": conn.execute(
                    "SELECT count(*) FROM commands WHERE finished_at IS NOT NULL").fetchone()[0]}


async def _claims(base: str, agents: list[dict], name: str) -> Run:
    """Agents at work: a poll claims up to 10, then each is reported (so the claimable index
    stays as it is in a fleet, not filling with leases). The rate counts claimed commands;
    the latencies are the polls' alone."""
    rng = random.Random()
    poll_ms: list[float] = []
    ok = {"status": "succeeded", "exit_code": 0, "output": "pong"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        async def op(i: int) -> int:
            a = agents[rng.randrange(len(agents))]
            url = f"{base}/api/v1/agents/{a['agent_id']}/commands"
            t0 = time.perf_counter()
            async with session.get(f"{url}?limit=10", headers=a["headers"]) as resp:
                body = await resp.read()
                if resp.status != 200:
                    return -1
            poll_ms.append((time.perf_counter() - t0) * 1000)
            claimed = json.loads(body)["commands"]
            for c in claimed:
                async with session.post(f"{url}/{c['id']}/result", headers=a["headers"], json=ok) as resp:
                    await resp.read()
            return len(claimed)
        run = await closed_loop(name, CONCURRENCY, WINDOW_S, op)
    run.latencies_ms = poll_ms[-run.requests:] if run.requests else []
    return run


def run() -> dict:
    stack = start_stack(FLEETLINE_PRUNE_INTERVAL_S="1000000")  # its dispatch prunes once, at start
    try:
        url = database_url(stack)
        agents = seed_agents(stack, AGENTS)
        started = time.monotonic()
        _seed(url, agents, _a_signature(stack))
        seeded_s = time.monotonic() - started
        before_sizes = _sizes(url)
        base = stack.dispatch_urls[0]
        windows: dict[str, list[Run]] = {"no pruning (before)": [], "while pruning": [], "no pruning (after)": []}
        for _ in range(2):
            windows["no pruning (before)"].append(asyncio.run(_claims(base, agents, "claims, no pruning")))

        pruner = Pruner(postgres_url(url), DB_SETTINGS, 3600, 30, 365)
        outcome: dict = {}

        def prune() -> None:
            t0 = time.monotonic()
            outcome["deleted"] = asyncio.run(pruner.prune())
            outcome["seconds"] = time.monotonic() - t0

        thread = threading.Thread(target=prune)
        thread.start()
        while thread.is_alive() and len(windows["while pruning"]) < DURING_WINDOWS:
            window = asyncio.run(_claims(base, agents, "claims, while pruning"))
            if thread.is_alive():  # only windows wholly inside the pruning count
                windows["while pruning"].append(window)
        thread.join()
        after_prune_sizes = _sizes(url)
        for _ in range(2):
            windows["no pruning (after)"].append(asyncio.run(_claims(base, agents, "claims, no pruning")))
        with psycopg.connect(url, autocommit=True) as conn:
            for t in TABLES:
                conn.execute(f"VACUUM {t}")
        after_vacuum_sizes = _sizes(url)
    finally:
        stack.stop()

    rows = []
    for name, runs in windows.items():
        if not runs:
            continue
        rates = [r.rate for r in runs]
        rows.append({"name": name, "windows": len(runs), "claims_per_s": round(statistics.median(rates), 1),
                     "p50_ms": round(statistics.median(r.pct(50) for r in runs), 2),
                     "p99_ms": round(max(r.pct(99) for r in runs), 2)})
    deleted = sum(v for k, v in outcome["deleted"].items() if k in ("commands", "job_commands"))
    rate = deleted / outcome["seconds"]
    baseline = next(r for r in rows if r["name"] == "no pruning (before)")["claims_per_s"]
    during = next((r for r in rows if r["name"] == "while pruning"), None)
    print_table(f"retention: claims (poll, then a result each) through dispatch ({CONCURRENCY} concurrent, "
                f"{WINDOW_S:.0f} s windows; latency: the polls) "
                f"while the pruner deletes {BACKLOG:,} finished commands", rows,
                ["name", "windows", "claims_per_s", "p50_ms", "p99_ms"])
    if during:
        print(f"claims while pruning / before: {during['claims_per_s'] / baseline:.3f}")
    print(f"pruner: {deleted:,} commands (and their deliveries) in {outcome['seconds']:.1f} s = {rate:,.0f} rows/s "
          f"(seeding took {seeded_s:.0f} s)")
    sizes = [{"when": "before", **before_sizes}, {"when": "after pruning", **after_prune_sizes},
             {"when": "after VACUUM", **after_vacuum_sizes}]
    print_table("table sizes (MiB) and finished commands", sizes, ["when", *TABLES, "finished_commands"])
    result = {"backlog": BACKLOG, "concurrency": CONCURRENCY, "window_s": WINDOW_S, "rows": rows,
              "pruned": outcome["deleted"], "prune_seconds": round(outcome["seconds"], 1),
              "prune_rows_per_s": round(rate), "sizes": sizes,
              "during_over_before": round(during["claims_per_s"] / baseline, 3) if during else None,
              "all_windows": {k: [r.row() for r in v] for k, v in windows.items()}}
    write_result("retention", result)
    return result


if __name__ == "__main__":
    run()
