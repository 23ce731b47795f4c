"""Jobs: what one request for many agents costs, and how fast a rollout moves.

1. Fan-out: POST /api/v1/admin/jobs for 1,000 and 10,000 targets (one signed command each,
   one INSERT), side by side with queueing the same commands one request at a time (on
   1,000 targets): the per-target ratio is the figure.
2. Moving a 10,000-target job on: the bounded facts advance reads (JOB_PROGRESS) against
   full counts by status (JOB_COUNTS, what the API shows), side by side.
3. Rollout: 500 simulated agents holding polls (ack, then report at once) run a job with
   no window and with windows of 50 and 10; targets finished per second, and the widest
   window seen (sampled from the database every 20 ms) against the limit.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import httpx
import psycopg

from bench.harness import database_url, print_table, seed_agents, start_stack, write_result

FANOUT = (1000, 10000)
ONE_BY_ONE = 1000
ROLLOUT_AGENTS = 500
REPEAT = 50
WINDOWS = (None, 50, 10)
IN_WINDOW = """
SELECT count(*) FROM commands
 WHERE job_id = %s AND (status IN ('sent', 'running') OR (status = 'pending' AND visible_at <> 'infinity'))
"""


def _label(url: str, agents: list[dict], name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE agents SET labels = jsonb_build_object('group', %s::text) WHERE id = ANY(%s::uuid[])",
                     (name, [a["agent_id"] for a in agents]))


def _advance_reads(url: str) -> list[dict]:
    """Per-read cost on the largest job, each statement run REPEAT times in turn."""
    from services.dispatch.lifecycle import queries as q

    rows = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE commands")
        job_id = conn.execute("SELECT id FROM jobs ORDER BY target_count DESC LIMIT 1").fetchone()[0]
        statements = {
            # This job has neither a window nor a failure limit (10,000 pending targets).
            "facts for advance (JOB_PROGRESS)":
                (q.JOB_PROGRESS.replace("$1", "%(j)s").replace("$2", "false").replace("$3::int", "NULL::int")
                 .replace("$3", "NULL"), {"j": job_id}),
            "full counts (JOB_COUNTS)": (q.JOB_COUNTS.replace("$1::uuid[]", "%(j)s::uuid[]"), {"j": [job_id]}),
        }
        for name, (sql, args) in statements.items():
            conn.execute(sql, args)  # warm
            t0 = time.perf_counter()
            for _ in range(REPEAT):
                conn.execute(sql, args).fetchall()
            rows.append({"read": name, "ms_each": round((time.perf_counter() - t0) / REPEAT * 1000, 3)})
    return rows


def _fanout(base: str, admin: dict, url: str, agents: list[dict]) -> list[dict]:
    rows = []
    for n in FANOUT:
        _label(url, agents[:n], f"fan-{n}")
        t0 = time.perf_counter()
        resp = httpx.post(f"{base}/api/v1/admin/jobs", headers=admin, timeout=120,
                          json={"selector": {"labels": {"group": f"fan-{n}"}}, "command": {"type": "ping"}})
        seconds = time.perf_counter() - t0
        assert resp.status_code == 201 and resp.json()["target_count"] == n, resp.text[:200]
        rows.append({"how": f"one job, {n} targets", "targets": n, "seconds": round(seconds, 3),
                     "us_per_target": round(seconds / n * 1e6, 1)})
    with httpx.Client(base_url=base, headers=admin, timeout=30) as client:
        t0 = time.perf_counter()
        for a in agents[:ONE_BY_ONE]:
            assert client.post("/api/v1/admin/commands", json={"agent_id": a["agent_id"], "type": "ping"}).status_code == 201
        seconds = time.perf_counter() - t0
    rows.append({"how": f"{ONE_BY_ONE} single commands, one request each", "targets": ONE_BY_ONE,
                 "seconds": round(seconds, 3), "us_per_target": round(seconds / ONE_BY_ONE * 1e6, 1)})
    return rows


async def _agent(session: aiohttp.ClientSession, base: str, agent: dict, stop: asyncio.Event) -> None:
    poll = f"{base}/api/v1/agents/{agent['agent_id']}/commands?wait=2"
    while not stop.is_set():
        async with session.get(poll, headers=agent["headers"]) as resp:
            if resp.status != 200:
                await asyncio.sleep(0.2)
                continue
            commands = (await resp.json())["commands"]
        for c in commands:
            path = f"{base}/api/v1/agents/{agent['agent_id']}/commands/{c['id']}"
            async with session.post(f"{path}/ack", headers=agent["headers"]) as resp:
                if (await resp.json())["status"] != "running":
                    continue
            async with session.post(f"{path}/result", headers=agent["headers"],
                                    json={"status": "succeeded", "exit_code": 0, "output": ""}) as resp:
                await resp.read()


async def _rollout(base: str, admin: dict, url: str, agents: list[dict], window: int | None) -> dict:
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(_agent(session, base, a, stop)) for a in agents]
        await asyncio.sleep(1.0)  # every agent holding a poll
        t0 = time.perf_counter()
        async with session.post(f"{base}/api/v1/admin/jobs", headers=admin, json={
                "selector": {"labels": {"group": "rollout"}}, "command": {"type": "ping"},
                "rollout": {"max_in_flight": window}}) as resp:
            job = await resp.json()
        widest = 0
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                widest = max(widest, conn.execute(IN_WINDOW, (job["id"],)).fetchone()[0])
                async with session.get(f"{base}/api/v1/admin/jobs/{job['id']}", headers=admin) as resp:
                    state = await resp.json()
                if state["status"] != "running":
                    break
                await asyncio.sleep(0.02)
        seconds = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert state["counts"]["succeeded"] == len(agents), state["counts"]
    return {"window": window or "none", "targets": len(agents), "seconds": round(seconds, 2),
            "targets_per_s": round(len(agents) / seconds, 1), "widest_seen": widest}


def run() -> dict:
    stack = start_stack()
    try:
        base, url = stack.dispatch_urls[0], database_url(stack)
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        agents = seed_agents(stack, max(FANOUT))
        fan = _fanout(base, admin, url, agents)
        print_table("jobs: fan-out (one signed command per target) vs one request per command", fan,
                    ["how", "targets", "seconds", "us_per_target"])
        reads = _advance_reads(url)
        print_table("jobs: what moving a 10,000-target job on reads, per call", reads, ["read", "ms_each"])
        with psycopg.connect(url, autocommit=True) as conn:  # a quiet table for the rollouts
            conn.execute("TRUNCATE command_output, deliveries, commands, jobs")
        rollout_agents = agents[:ROLLOUT_AGENTS]
        _label(url, rollout_agents, "rollout")
        rolls = []
        for window in WINDOWS:
            rolls.append(asyncio.run(_rollout(base, admin, url, rollout_agents, window)))
        print_table(f"jobs: rollout over {ROLLOUT_AGENTS} agents holding polls", rolls,
                    ["window", "targets", "seconds", "targets_per_s", "widest_seen"])
        single = next(r for r in fan if r["targets"] == ONE_BY_ONE and "single" in r["how"])
        job_1k = next(r for r in fan if r["targets"] == ONE_BY_ONE and "job" in r["how"])
        ratio = round(single["us_per_target"] / job_1k["us_per_target"], 1)
        print(f"\none job is {ratio}x cheaper per target than one request per command (same run)")
        result = {"fanout": fan, "advance_reads": reads, "rollout": rolls, "job_vs_single_per_target": ratio}
        write_result("jobs", result)
        return result
    finally:
        stack.stop()


if __name__ == "__main__":
    json.dumps(run())
