"""Held long polls at fleet scale, through the gateway: N simulated agents (one client
process) each hold a poll (wait 55 s), and for each N we measure, while they are idle:
dispatch and gateway CPU (% of one core), database statements per second (commits in
pg_stat_database), RSS per held poll in dispatch and in the gateway; then queue 100
commands to random agents and time queue -> delivery. Plus the redelivery delay after an
ack timeout, and a herd: how long 5,000 agents take to be held again after a dispatch
restart (agents back off as the real agent does), and the errors they saw.

This machine's hard limit of 20,000 open files allows about 9,900 held polls per gateway
process (two sockets each); larger N use more gateway processes.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import re
import signal
import time

import aiohttp
import httpx
import psutil
import psycopg

from agent.timing import backoff_delay
from bench.harness import (
    FSYNC_OFF,
    database_url,
    print_table,
    seed_agents,
    start_stack,
    write_result,
)
from bench.loadgen import percentile
from fleetline.cli.procs import Child, child_env, wait_ready
from fleetline.serve import raise_file_limit

# FLEETLINE_BENCH_HELD=10000 runs one size (the herd and the redelivery still run).
SIZES = tuple(int(n) for n in os.environ.get("FLEETLINE_BENCH_HELD", "1000,5000,10000").split(","))
PER_GATEWAY = 9000
IDLE_S = 10.0
WAIT_S = 55
LATENCY_COMMANDS = 100


def _metric(url: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", httpx.get(f"{url}/metrics", timeout=10).text, re.M)
    return float(match.group(1)) if match else -1.0


def _cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def _commits(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                            ).fetchone()[0]


class Fleet:
    """N agents holding polls, each an endless loop like the real agent's."""

    def __init__(self, gateways: list[str], agents: list[dict]):
        self.gateways, self.agents = gateways, agents
        self.received: dict[str, float] = {}  # command id -> when its poll answer arrived
        self.errors = 0
        self.tasks: list[asyncio.Task] = []

    async def start(self, session: aiohttp.ClientSession, n: int) -> None:
        for i, agent in enumerate(self.agents[:n]):
            self.tasks.append(asyncio.create_task(self._hold(session, self.gateways[i % len(self.gateways)], agent)))

    async def _hold(self, session: aiohttp.ClientSession, gateway: str, agent: dict) -> None:
        url = f"{gateway}/api/v1/agents/{agent['agent_id']}/commands?limit=10&wait={WAIT_S}"
        attempt = 0
        while True:
            try:
                async with session.get(url, headers=agent["headers"]) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                attempt = 0
                now = time.monotonic()
                for command in body["commands"]:
                    self.received[command["id"]] = now
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                self.errors += 1
                attempt += 1
                await asyncio.sleep(backoff_delay(attempt, random))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout

    def met() -> bool:
        try:
            return predicate()
        except httpx.HTTPError:  # a process busy with a burst of arrivals: ask again
            return False

    while not met():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def _latency(fleet: Fleet, admin_url: str, admin: dict, n: int) -> list[float]:
    rng = random.Random(7)
    queued: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=admin_url, headers=admin, timeout=30) as client:
        for _ in range(LATENCY_COMMANDS):
            agent = fleet.agents[rng.randrange(n)]
            t0 = time.monotonic()
            r = await client.post("/api/v1/admin/commands", json={"agent_id": agent["agent_id"], "type": "ping",
                                                                  "ack_timeout_s": 3600})
            queued[r.json()["id"]] = t0
            await asyncio.sleep(0.02)
    await _until(lambda: all(c in fleet.received for c in queued), 60, "every command to arrive")
    return (sorted((fleet.received[c] - t0) * 1000 for c, t0 in queued.items()), list(queued))


def _server_side(dsn: str, ids: list[str]) -> list[float]:
    """Queue -> sent from the database's own stamps: the server's share of the delay,
    without the gateway's relay or the load generator's own event loop."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT EXTRACT(EPOCH FROM sent_at - created_at) * 1000 FROM commands "
                            "WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()
    return sorted(float(r[0]) for r in rows)


def _pct(data: list[float], p: float) -> float:
    return round(percentile(data, p), 1)


def _fresh(stack, gateways: list[Child]) -> None:
    """New dispatch and gateway processes, so each size's memory is measured from the same
    start (a process keeps what an earlier, larger round made it allocate)."""
    for child, url in [(stack.children[1], stack.dispatch_urls[0]),
                       *[(g, f"http://127.0.0.1:{g.port}") for g in gateways]]:
        child.terminate()
        child.wait(10)
        child.respawn()
        wait_ready(url, child, timeout=60)


async def _measure(stack, gateways: list[Child], fleet: Fleet, session, n: int, dsn: str) -> dict:
    _fresh(stack, gateways)
    dispatch_url = stack.dispatch_urls[0]
    dispatch_pid = stack.children[1].proc.pid
    gateway_pids = [g.proc.pid for g in gateways]
    await fleet.start(session, min(n, 50))  # warm both up (imports, pools, caches) first
    await _until(lambda: _metric(dispatch_url, "fleetline_held_polls") >= min(n, 50), 60, "warm-up polls")
    await fleet.stop()
    await _until(lambda: _metric(dispatch_url, "fleetline_held_polls") == 0, 60, "warm-up polls to end")
    rss0 = (_rss(dispatch_pid), sum(_rss(p) for p in gateway_pids))
    await fleet.start(session, n)
    await _until(lambda: _metric(dispatch_url, "fleetline_held_polls") >= n, 180, f"{n} held polls")
    # The load generator is 10,000 agents in one Python process: its collector walking
    # their requests paused it for up to 0.2 s, which showed as the servers' tail (p99
    # 211 ms at 10,000 against 21 ms frozen, same day; queue -> sent in the database 5 ms
    # either way). Real agents are one per machine, so its held requests are frozen.
    gc.freeze()
    # Backends report their counters up to 10 s late (PostgreSQL's idle stats interval):
    # wait that out, so the arrival burst's claims are not counted as idle statements.
    await asyncio.sleep(12)
    rss1 = (_rss(dispatch_pid), sum(_rss(p) for p in gateway_pids))
    cpu0 = (_cpu_s(dispatch_pid), sum(_cpu_s(p) for p in gateway_pids))
    commits0, t0 = _commits(dsn), time.monotonic()
    await asyncio.sleep(IDLE_S)
    elapsed = time.monotonic() - t0
    commits1 = _commits(dsn)
    cpu1 = (_cpu_s(dispatch_pid), sum(_cpu_s(p) for p in gateway_pids))
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    latencies, ids = await _latency(fleet, dispatch_url, admin, n)
    sent = _server_side(dsn, ids)
    print(f"held polls: {n} measured", flush=True)
    row = {
        "held": n,
        "dispatch_idle_cpu_pct": round(100 * (cpu1[0] - cpu0[0]) / elapsed, 2),
        "gateway_idle_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / elapsed, 2),
        # One commit per statement; the two pg_stat reads of this measurement are subtracted.
        "db_statements_per_s": round(max(0, commits1 - commits0 - 2) / elapsed, 2),
        "goal_statements_per_s": round(n / WAIT_S + 5, 1),
        "dispatch_kib_per_poll": round((rss1[0] - rss0[0]) / n / 1024, 1),
        "gateway_kib_per_poll": round((rss1[1] - rss0[1]) / n / 1024, 1),
        "queue_to_delivery_p50_ms": _pct(latencies, 50),
        "queue_to_delivery_p99_ms": _pct(latencies, 99),
        "queue_to_sent_p50_ms": _pct(sent, 50),
        "queue_to_sent_p99_ms": _pct(sent, 99),
    }
    await fleet.stop()
    gc.unfreeze()
    await _until(lambda: _metric(dispatch_url, "fleetline_held_polls") == 0, 60, "the polls to be dropped")
    return row


async def _redelivery(stack, fleet: Fleet, session) -> float:
    """A command delivered and never acked (ack timeout 2 s) reaches the agent's held poll."""
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    agent = fleet.agents[-1]
    async with httpx.AsyncClient(base_url=stack.dispatch_urls[0], timeout=30) as client:
        r = await client.post("/api/v1/admin/commands", headers=admin,
                              json={"agent_id": agent["agent_id"], "type": "ping", "ack_timeout_s": 2})
        cid = r.json()["id"]
        first = await client.get(f"/api/v1/agents/{agent['agent_id']}/commands", headers=agent["headers"])
        assert [c["id"] for c in first.json()["commands"]] == [cid]
        due = time.monotonic() + 2
        again = await client.get(f"/api/v1/agents/{agent['agent_id']}/commands?wait=30", headers=agent["headers"])
        assert [c["id"] for c in again.json()["commands"]] == [cid]
        return round((time.monotonic() - due) * 1000, 1)


async def _herd(stack, fleet: Fleet, session, n: int) -> dict:
    dispatch = stack.children[1]
    dispatch_url = stack.dispatch_urls[0]
    await fleet.start(session, n)
    await _until(lambda: _metric(dispatch_url, "fleetline_held_polls") >= n, 180, f"{n} held polls")
    errors0 = fleet.errors
    dispatch.proc.send_signal(signal.SIGKILL)
    dispatch.proc.wait()
    t0 = time.monotonic()
    dispatch.respawn()
    wait_ready(dispatch_url, dispatch, timeout=60)

    await _until(lambda: _metric(dispatch_url, "fleetline_held_polls") >= n, 120, f"{n} agents back")
    row = {"agents": n, "all_back_s": round(time.monotonic() - t0, 1), "errors_seen": fleet.errors - errors0}
    await fleet.stop()
    return row


async def _main(stack, gateways: list[Child], agents: list[dict], dsn: str) -> dict:
    fleet = Fleet([f"http://127.0.0.1:{g.port}" for g in gateways], agents)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=WAIT_S + 60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        rows = [await _measure(stack, gateways, fleet, session, n, dsn) for n in SIZES]
        redelivery_ms = await _redelivery(stack, fleet, session)
        herd = await _herd(stack, fleet, session, 5000)
    return {"sizes": rows, "redelivery_after_ack_timeout_ms": redelivery_ms, "herd": herd}


def _extra_gateways(stack, count: int) -> list[Child]:
    """The stack's gateway plus more on free ports (each serves up to PER_GATEWAY polls)."""
    from fleetline.cli.pgembed import free_port

    gw = stack.children[-1]
    gw.port = int(stack.gateway_url.rsplit(":", 1)[1])
    out = [gw]
    for i in range(count - 1):
        port = free_port()
        child = Child(f"gateway-{i + 2}", "gateway", ["--port", str(port)],
                      child_env({**stack.env, "FLEETLINE_AUTH_URLS": stack.auth_url,
                                 "FLEETLINE_DISPATCH_URLS": ",".join(stack.dispatch_urls)}), None)
        child.port = port
        wait_ready(f"http://127.0.0.1:{port}", child)
        stack.children.append(child)
        out.append(child)
    return out


def _real_agents(count: int = 4, commands: int = 100) -> dict:
    """The shipped agent with its default settings (long polls): queue -> sent, from the
    database's own stamps, for commands queued 50 ms apart to random agents."""
    import tempfile
    from pathlib import Path

    from fleetline.cli.stack import Stack

    stack = Stack(Path(tempfile.mkdtemp(prefix="fleetline-bench-agents-")), port=0, agents=count,
                  fast_unsafe_db=FSYNC_OFF, env={"FLEETLINE_LOG_LEVEL": "WARNING"})
    stack.start()
    stack.start_agents()
    try:
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        url = stack.dispatch_urls[0]

        def held() -> bool:
            return _metric(url, "fleetline_held_polls") >= count

        deadline = time.monotonic() + 120
        while not held() and time.monotonic() < deadline:
            time.sleep(0.5)
        ids = [a["id"] for a in httpx.get(f"{stack.gateway_url}/api/v1/admin/agents", headers=admin).json()["agents"]]
        rng = random.Random(3)
        queued = []
        for _ in range(commands):
            r = httpx.post(f"{stack.gateway_url}/api/v1/admin/commands", headers=admin,
                           json={"agent_id": rng.choice(ids), "type": "ping"})
            queued.append(r.json()["id"])
            time.sleep(0.05)
        with psycopg.connect(stack.pg.url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = conn.execute("SELECT EXTRACT(EPOCH FROM sent_at - created_at) * 1000 FROM commands "
                                    "WHERE id = ANY(%s) AND sent_at IS NOT NULL", (queued,)).fetchall()
                if len(rows) == len(queued):
                    break
                time.sleep(0.5)
        lat = sorted(float(r[0]) for r in rows)
        return {"agents": count, "commands": len(lat), "queue_to_sent_p50_ms": _pct(lat, 50),
                "queue_to_sent_p99_ms": _pct(lat, 99)}
    finally:
        stack.stop()


def run() -> dict:
    raise_file_limit()
    real = _real_agents()
    stack = start_stack()
    try:
        dsn = database_url(stack)
        agents = seed_agents(stack, max(SIZES))
        gateways = _extra_gateways(stack, -(-max(SIZES) // PER_GATEWAY))
        result = asyncio.run(_main(stack, gateways, agents, dsn))
    finally:
        stack.stop()
    result["gateways"] = len(gateways)
    result["real_agents"] = real
    print_table(f"held long polls through {len(gateways)} gateway process(es), idle {IDLE_S:.0f} s, "
                f"{LATENCY_COMMANDS} commands queued meanwhile", result["sizes"],
                ["held", "dispatch_idle_cpu_pct", "gateway_idle_cpu_pct", "db_statements_per_s",
                 "goal_statements_per_s", "dispatch_kib_per_poll", "gateway_kib_per_poll",
                 "queue_to_delivery_p50_ms", "queue_to_delivery_p99_ms", "queue_to_sent_p50_ms",
                 "queue_to_sent_p99_ms"])
    print(f"redelivery reaches a held poll {result['redelivery_after_ack_timeout_ms']} ms after its ack timeout")
    print(f"herd: {result['herd']['agents']} agents held again {result['herd']['all_back_s']} s after a "
          f"dispatch SIGKILL and restart; {result['herd']['errors_seen']} failed polls meanwhile")
    print(f"real agents (defaults, long polls): queue -> sent p50 {real['queue_to_sent_p50_ms']} ms, "
          f"p99 {real['queue_to_sent_p99_ms']} ms over {real['commands']} commands")
    write_result("held_polls", result)
    return result


if __name__ == "__main__":
    run()
