"""The NOTIFY ceiling: commits per second of transactions that notify against the same
transactions without, with PostgreSQL durable (fsync and synchronous_commit on) and, for
comparison, with both off, side by side in one run.

PostgreSQL takes one global lock for the commit of any transaction that notified
(`PreCommit_Notify` in src/backend/commands/async.c) and holds it through the commit's WAL
flush, so notifying commits cannot share a flush (group commit) the way plain ones do:
their rate is bounded by one flush at a time. Every queued command, job start, window
release and live-output chunk is such a commit in Fleetline.

Each case: C connections, each in a loop of `BEGIN; INSERT one row; [SELECT pg_notify];
COMMIT`, for SECONDS, three rounds alternating plain and notifying. Someone LISTENs, as
dispatch does (a notification nobody listens for is dropped before the queue)."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.harness import print_table, write_result
from fleetline.cli.pgembed import EmbeddedPostgres

SECONDS = 4.0
ROUNDS = 3
CONCURRENCY = (1, 8, 32)


async def _loop(url: str, concurrency: int, notify: bool) -> float:
    conns = [await asyncpg.connect(url) for _ in range(concurrency)]
    listener = await asyncpg.connect(url)
    await listener.add_listener("bench_wake", lambda *a: None)
    done = 0
    stop = time.monotonic() + SECONDS

    async def worker(conn: asyncpg.Connection) -> None:
        nonlocal done
        while time.monotonic() < stop:
            async with conn.transaction():
                await conn.execute("INSERT INTO bench_rows (n) VALUES (1)")
                if notify:
                    await conn.execute("SELECT pg_notify('bench_wake', 'x')")
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.monotonic() - started
    for c in (*conns, listener):
        await c.close()
    return done / elapsed


async def _measure(url: str) -> list[dict]:
    setup = await asyncpg.connect(url)
    await setup.execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, n int)")
    await setup.close()
    rows = []
    for c in CONCURRENCY:
        plain, notifying = [], []
        for _ in range(ROUNDS):
            plain.append(await _loop(url, c, False))
            notifying.append(await _loop(url, c, True))
        ratios = sorted(n / p for n, p in zip(notifying, plain, strict=True))
        rows.append({"connections": c, "plain_commits_per_s": round(statistics.median(plain)),
                     "notifying_commits_per_s": round(statistics.median(notifying)),
                     "ratio": round(ratios[len(ratios) // 2], 3),
                     "ratio_range": f"{ratios[0]:.2f}-{ratios[-1]:.2f}"})
    return rows


def run() -> dict:
    result: dict = {"seconds": SECONDS, "rounds": ROUNDS, "postgres": "durable and fsync off, both"}
    for name, fast in (("durable", False), ("fsync_off", True)):
        pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix=f"fleetline-notify-{name}-")), fast_unsafe=fast)
        url = pg.start()
        try:
            rows = asyncio.run(_measure(url))
        finally:
            pg.stop()
            pg.destroy()
        print_table(f"commits/s, plain vs notifying, PostgreSQL {name.replace('_', ' ')} "
                    f"({SECONDS:.0f} s, median of {ROUNDS} alternating rounds)", rows,
                    ["connections", "plain_commits_per_s", "notifying_commits_per_s", "ratio", "ratio_range"])
        result[name] = rows
    write_result("notify", result)
    return result


if __name__ == "__main__":
    run()
