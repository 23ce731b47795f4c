"""What a fleet does to the server (issues 26 and 33), through the gateway, on a durable
PostgreSQL:

- first polls: 1,000 freshly enrolled agents each polling for the first time, at 333 a
  second (every first request marks the agent's credentials used before it is answered),
  on the disk as it is and on a busy one (every commit waits 40 ms before its flush,
  holding the flush lock: `commit_delay`, PostgreSQL's group commit then as a slow disk);
- a burst: 1,000 connections from one address at once, one poll each (a site behind NAT
  reconnecting);
- enrolment: 500 machines behind one address registering with one 500-use token, 50 at a
  time, at the default limits, each answered 429 waiting its Retry-After as the agent does.

`python -m bench field` measures this tree; `python -m bench.field_bench BASELINE_DIR`
measures BASELINE_DIR (another checkout, e.g. `git worktree add /tmp/before 2306f4c`) and
this tree alternately, each round in its own process with PYTHONPATH set to the tree, so
everything measured comes from it. Only harness functions older than the change are used.

`fleetline up --agents N` (N = 50 and 200): from the ready line to every demo agent having
answered one ping job, at the default limits (this tree only: the baseline took 415 s for
50 agents, as issue 33 reports)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
AGENTS = 1000
RATE = 333
ROUNDS = 2
BUSY_DISK_MS = 40


def _percentiles(latencies: list[float]) -> dict:
    from bench.loadgen import percentile

    data = sorted(latencies)
    return {"p50_ms": round(percentile(data, 50) * 1000, 1), "p99_ms": round(percentile(data, 99) * 1000, 1),
            "max_ms": round(data[-1] * 1000, 1)}


async def _first_polls(gateway: str, agents: list[dict]) -> dict:
    import aiohttp

    async with aiohttp.ClientSession(gateway, connector=aiohttp.TCPConnector(limit=0)) as session:
        async def poll(i: int, agent: dict) -> tuple[int, float]:
            await asyncio.sleep(i / RATE)
            began = time.monotonic()
            try:
                async with session.get(f"/api/v1/agents/{agent['agent_id']}/commands", headers=agent["headers"]) as r:
                    await r.read()
                    return r.status, time.monotonic() - began
            except aiohttp.ClientError:
                return 599, time.monotonic() - began

        answers = await asyncio.gather(*(poll(i, a) for i, a in enumerate(agents)))
    return {"answered_200": sum(1 for s, _ in answers if s == 200),
            **_percentiles([seconds for _, seconds in answers])}


async def _burst(gateway: str, agents: list[dict]) -> dict:
    host, port = re.match(r"https?://([^:/]+):(\d+)", gateway).groups()

    async def one(agent: dict) -> tuple[int | str, float]:
        began = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            head = "".join(f"{k}: {v}\r\n" for k, v in agent["headers"].items())
            writer.write(f"GET /api/v1/agents/{agent['agent_id']}/commands HTTP/1.1\r\nHost: g\r\n{head}"
                         "Connection: close\r\n\r\n".encode())
            answer = await reader.read()
            writer.close()
            return int(answer.split(b" ", 2)[1]) if answer else "no answer", time.monotonic() - began
        except (OSError, ValueError, IndexError) as exc:
            return type(exc).__name__, time.monotonic() - began

    began = time.monotonic()
    answers = await asyncio.gather(*(one(a) for a in agents))
    took = time.monotonic() - began
    return {"answered_200": sum(1 for s, _ in answers if s == 200), "seconds_for_all": round(took, 2),
            "failures": sorted({str(s) for s, _ in answers if s != 200}),
            **_percentiles([seconds for _, seconds in answers])}


async def _enrol(auth_url: str, admin_token: str) -> dict:
    import httpx

    from agent.timing import rate_limited_delay

    token = httpx.post(f"{auth_url}/api/v1/admin/registration-tokens", json={"max_uses": 500},
                       headers={"Authorization": f"Bearer {admin_token}"}).json()["token"]
    rng, gate, limited = random.Random(5), asyncio.Semaphore(50), []
    async with httpx.AsyncClient(base_url=auth_url, timeout=60, limits=httpx.Limits(max_connections=50)) as client:
        async def machine(i: int) -> int:
            async with gate:
                while True:
                    r = await client.post("/api/v1/agents/register", json={
                        "registration_token": token, "machine_id": f"site-{i}-{time.time()}", "hostname": "h"})
                    if r.status_code != 429:
                        return r.status_code
                    limited.append(r)
                    await asyncio.sleep(rate_limited_delay(float(r.headers.get("Retry-After", "1")), rng))

        began = time.monotonic()
        statuses = await asyncio.gather(*(machine(i) for i in range(500)))
        took = time.monotonic() - began
    return {"registered": statuses.count(201), "seconds": round(took, 2),
            "per_s": round(statuses.count(201) / took, 1), "answered_429": len(limited)}


def _busy_disk(stack, flush_ms: int) -> None:
    import psycopg

    with psycopg.connect(stack.pg.url, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET commit_delay = {flush_ms * 1000}")
        conn.execute("ALTER SYSTEM SET commit_siblings = 0")
        conn.execute("SELECT pg_reload_conf()")


def _retire_seeded(stack) -> None:
    """The seeded agents are done with: their machine ids (bench-N) are free for the next seeding."""
    import psycopg

    with psycopg.connect(stack.pg.url, autocommit=True) as conn:
        conn.execute("UPDATE agents SET status = 'revoked', revoked_at = now() WHERE status = 'active'")


def measure() -> dict:
    """One round against stacks built from the tree on sys.path."""
    from bench.harness import seed_agents, start_stack
    from fleetline.settings import Settings

    out: dict = {}
    # At the tree's own defaults, as a site sees the server (the load is one address): the
    # harness's unlimited settings put back, but for the check-in limit (each agent polls once).
    own = Settings.from_env({})
    defaults = {"FLEETLINE_MAX_PENDING_PER_ADDRESS": "64", "FLEETLINE_MAX_STALLED_PER_ADDRESS": "64",
                "FLEETLINE_DB_POOL_MAX": str(own.db_pool_max),
                "FLEETLINE_REGISTRATION_RATE_LIMIT": own.registration_rate_limit,
                "FLEETLINE_REGISTRATION_FAILURE_LIMIT": getattr(own, "registration_failure_limit", "10/minute"),
                "FLEETLINE_RENEW_RATE_LIMIT": own.renew_rate_limit}
    stack = start_stack(**defaults)
    try:
        gateway = stack.gateway_url
        out["first_polls"] = asyncio.run(_first_polls(gateway, seed_agents(stack, AGENTS)))
        _retire_seeded(stack)
        agents = seed_agents(stack, 10)
        asyncio.run(_first_polls(gateway, agents))  # marked: the burst measures connections only
        out["burst_1000_one_address"] = asyncio.run(_burst(gateway, [agents[i % 10] for i in range(1000)]))
        try:
            out["enrol_500_one_address"] = asyncio.run(_enrol(stack.auth_url, stack.admin_token))
        except Exception as exc:  # a baseline without the 1.3 limits may never finish in time
            out["enrol_500_one_address"] = {"error": repr(exc)}
        _busy_disk(stack, BUSY_DISK_MS)
        _retire_seeded(stack)
        out["first_polls_busy_disk"] = asyncio.run(_first_polls(gateway, seed_agents(stack, AGENTS)))
    finally:
        stack.stop()
    return out


def _round(tree: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure"], cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True,
                          timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def demo_fleet(agents: int) -> dict:
    """`fleetline up --agents N` as `make up` runs it: seconds from the ready line to every
    demo agent having answered one ping job."""
    import httpx

    data_dir = Path(tempfile.mkdtemp(prefix="fleetline-bench-up-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "fleetline", "up", "--data-dir", str(data_dir), "--port", "0",
                             "--agents", str(agents)], cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**env, "FLEETLINE_POLL_INTERVAL_S": "10"})
    try:
        line = ""
        while "ready" not in line:
            line = proc.stdout.readline()
        ready = time.monotonic()
        gateway = re.search(r"gateway=(\S+)", line).group(1)
        admin = {"Authorization": f"Bearer {(data_dir / 'admin-token').read_text().strip()}"}
        while len(httpx.get(f"{gateway}/api/v1/admin/agents", headers=admin).json()["agents"]) < agents:
            time.sleep(0.2)
        enrolled = time.monotonic()
        job = httpx.post(f"{gateway}/api/v1/admin/jobs", headers=admin,
                         json={"selector": {"labels": {"env": "demo"}}, "command": {"type": "ping"}}).json()
        while httpx.get(f"{gateway}/api/v1/admin/jobs/{job['id']}", headers=admin).json()["status"] == "running":
            time.sleep(0.2)
        done = time.monotonic()
        counts = httpx.get(f"{gateway}/api/v1/admin/jobs/{job['id']}", headers=admin).json()["counts"]
    finally:
        proc.terminate()
        proc.wait(30)
    return {"agents": agents, "start_to_ready_s": round(ready - started, 1),
            "ready_to_enrolled_s": round(enrolled - ready, 1), "ready_to_all_answered_s": round(done - ready, 1),
            "succeeded": counts["succeeded"]}


def run(baseline: Path | None = None) -> dict:
    from bench.harness import print_table, write_result

    runs: dict[str, list[dict]] = {"after": []}
    if baseline is not None:
        runs["before"] = []
    for _ in range(ROUNDS if baseline is not None else 1):
        if baseline is not None:
            runs["before"].append(_round(baseline))
        runs["after"].append(_round(HERE))
    rows = []
    for side, results in runs.items():
        for i, r in enumerate(results):
            for case in ("first_polls", "first_polls_busy_disk", "burst_1000_one_address"):
                rows.append({"case": case, "side": side, "round": i + 1, **r[case]})
    print_table(f"field conditions through the gateway ({AGENTS} fresh agents' first polls at {RATE}/s; busy disk: "
                f"{BUSY_DISK_MS} ms before each flush)", rows,
                ["case", "side", "round", "answered_200", "p50_ms", "p99_ms", "max_ms", "seconds_for_all"])
    enrol = [{"side": side, "round": i + 1, **r["enrol_500_one_address"]} for side, results in runs.items()
             for i, r in enumerate(results)]
    print_table("500 registrations from one address, one token, 50 at a time, default limits", enrol,
                ["side", "round", "registered", "seconds", "per_s", "answered_429", "error"])
    fleets = [demo_fleet(n) for n in (50, 200)]
    print_table("fleetline up --agents N: every demo agent answering a ping job", fleets,
                ["agents", "start_to_ready_s", "ready_to_enrolled_s", "ready_to_all_answered_s", "succeeded"])
    result = {"baseline": str(baseline) if baseline else None, "runs": runs, "demo_fleets": fleets}
    write_result("field", result)
    return result


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure"]:
        print(json.dumps(measure()))
    else:
        run(Path(sys.argv[1]).resolve() if sys.argv[1:] else None)
