"""The gateway's edge, measured side by side in one run:

- short requests (empty polls over kept-alive connections): the gateway on uvicorn's stock
  httptools protocol against the edge protocol (deadlines, per-address caps), plain and
  over TLS;
- held polls (1,000 and 5,000) through one gateway process, plain and over TLS: its memory
  per held poll and its CPU while they are all parked;
- the reconnect herd: 5,000 agents holding polls when the gateway is SIGKILLed and
  restarted, all reconnecting at once (a fixed 0.5 s retry, the worst case: the real agent
  spreads itself over 10-20 s; aiohttp retries a request cut by a closed connection once
  by itself), plain and with TLS handshakes: the time from the kill until every poll is
  held again.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import aiohttp

from bench.harness import print_table, ratio_summary, seed_agents, start_stack, write_result
from bench.held_polls_bench import _cpu_s, _metric, _rss, _until
from bench.loadgen import Run, closed_loop
from fleetline.cli.pgembed import free_port
from fleetline.cli.procs import Child, child_env, stop_all, wait_ready
from fleetline.cli.tls import ensure_tls
from fleetline.serve import raise_file_limit
from fleetline.transport import tls_context

SIZES = tuple(int(n) for n in os.environ.get("FLEETLINE_BENCH_EDGE_HELD", "1000,5000").split(","))
HERD = int(os.environ.get("FLEETLINE_BENCH_EDGE_HERD", "5000"))
IDLE_S = 10.0
WAIT_S = 55
ROUNDS = 3


class Gateway:
    """One gateway process: `module` gateway (the edge), or bench.stock_gateway."""

    def __init__(self, stack, name: str, module: str = "gateway", tls: dict | None = None):
        self.port = free_port()
        self.tls = bool(tls)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        env = {**stack.env, "FLEETLINE_AUTH_URLS": stack.auth_url,
               "FLEETLINE_DISPATCH_URLS": ",".join(stack.dispatch_urls), **(tls or {})}
        self.child = Child(name, module, ["--port", str(self.port)], child_env(env), None)
        self.ca_file = stack.ca_file
        wait_ready(self.url, self.child, ca_file=self.ca_file)

    def restart(self, kill: bool = False) -> None:
        if kill:
            self.child.proc.send_signal(signal.SIGKILL)
            self.child.proc.wait()
        else:
            self.child.terminate()
            self.child.wait(10)
        self.child.respawn()
        wait_ready(self.url, self.child, timeout=60, ca_file=self.ca_file)

    def client_ssl(self):
        return tls_context(self.ca_file) if self.tls else None


async def _polls(gw: Gateway, agents: list[dict], concurrency: int = 32, seconds: float = 5.0) -> Run:
    rng = random.Random(7)
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=gw.client_ssl() or False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def op(i: int) -> int:
            a = agents[rng.randrange(len(agents))]
            async with session.get(f"{gw.url}/api/v1/agents/{a['agent_id']}/commands", headers=a["headers"]) as r:
                await r.read()
                return 1 if r.status == 200 else -1

        return await closed_loop(gw.child.name, concurrency, seconds, op)


class Holders:
    """N agents each holding a poll through one gateway, retrying a failed poll after
    `retry_s` (a fixed delay: every one of them comes back at once)."""

    def __init__(self, gw: Gateway, agents: list[dict], retry_s: float = 0.5):
        self.gw, self.agents, self.retry_s = gw, agents, retry_s
        self.errors = 0
        self.tasks: list[asyncio.Task] = []

    async def start(self, session: aiohttp.ClientSession, n: int) -> None:
        for agent in self.agents[:n]:
            self.tasks.append(asyncio.create_task(self._hold(session, agent)))

    async def _hold(self, session: aiohttp.ClientSession, agent: dict) -> None:
        url = f"{self.gw.url}/api/v1/agents/{agent['agent_id']}/commands?wait={WAIT_S}"
        while True:
            try:
                async with session.get(url, headers=agent["headers"]) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                self.errors += 1
                await asyncio.sleep(self.retry_s)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []


def _session(gw: Gateway) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=gw.client_ssl() or False),
                                 timeout=aiohttp.ClientTimeout(total=WAIT_S + 60))


async def _held(stack, gw: Gateway, agents: list[dict], n: int) -> dict:
    gw.restart()  # a fresh process for each size
    dispatch = stack.dispatch_urls[0]
    pid = gw.child.proc.pid
    async with _session(gw) as session:
        holders = Holders(gw, agents)
        await holders.start(session, 50)  # warm up
        await _until(lambda: _metric(dispatch, "fleetline_held_polls") >= 50, 60, "warm-up polls")
        await holders.stop()
        await _until(lambda: _metric(dispatch, "fleetline_held_polls") == 0, 60, "warm-up polls to end")
        rss0 = _rss(pid)
        t0 = time.monotonic()
        await holders.start(session, n)
        await _until(lambda: _metric(dispatch, "fleetline_held_polls") >= n, 300, f"{n} held polls")
        all_held_s = time.monotonic() - t0
        await asyncio.sleep(3)
        rss1, cpu0, t1 = _rss(pid), _cpu_s(pid), time.monotonic()
        await asyncio.sleep(IDLE_S)
        cpu = 100 * (_cpu_s(pid) - cpu0) / (time.monotonic() - t1)
        await holders.stop()
    await _until(lambda: _metric(dispatch, "fleetline_held_polls") == 0, 60, "the polls to be dropped")
    return {"held": n, "gateway": "tls" if gw.tls else "plain", "kib_per_poll": round((rss1 - rss0) / n / 1024, 1),
            "idle_cpu_pct": round(cpu, 2), "seconds_to_hold_all": round(all_held_s, 1)}


async def _herd(stack, gw: Gateway, agents: list[dict], n: int) -> dict:
    dispatch = stack.dispatch_urls[0]
    async with _session(gw) as session:
        holders = Holders(gw, agents)
        await holders.start(session, n)
        await _until(lambda: _metric(dispatch, "fleetline_held_polls") >= n, 300, f"{n} held polls")
        errors0 = holders.errors
        t0 = time.monotonic()
        gw.restart(kill=True)
        # The killed gateway's upstream connections close: dispatch drops their polls, and
        # counts each again as its agent comes back through the new gateway.
        await _until(lambda: _metric(dispatch, "fleetline_held_polls") < n, 60, "the polls to drop")
        await _until(lambda: _metric(dispatch, "fleetline_held_polls") >= n, 300, f"{n} agents back")
        row = {"agents": n, "gateway": "tls" if gw.tls else "plain",
               "all_back_s": round(time.monotonic() - t0, 1), "failed_polls": holders.errors - errors0}
        await holders.stop()
    await _until(lambda: _metric(dispatch, "fleetline_held_polls") == 0, 60, "the polls to be dropped")
    return row


def run() -> dict:
    raise_file_limit()
    stack = start_stack()
    gateways: list[Gateway] = []
    try:
        agents = seed_agents(stack, max(*SIZES, HERD))
        files = ensure_tls(stack.data_dir / "bench-tls")
        stack.ca_file = str(files.ca_file)
        tls = {"FLEETLINE_TLS_CERT_FILE": str(files.cert_file), "FLEETLINE_TLS_KEY_FILE": str(files.key_file)}
        stock = Gateway(stack, "stock uvicorn protocol", "bench.stock_gateway")
        edge = Gateway(stack, "edge protocol")
        edge_tls = Gateway(stack, "edge protocol over TLS", tls=tls)
        gateways = [stock, edge, edge_tls]
        runs: dict[str, list[Run]] = {g.child.name: [] for g in gateways}
        for _ in range(ROUNDS):
            for gw in gateways:
                runs[gw.child.name].append(asyncio.run(_polls(gw, agents)))
        best = {name: max(rs, key=lambda r: r.rate) for name, rs in runs.items()}
        short = [best[g.child.name].row() for g in gateways]
        ratios = {"edge / stock": ratio_summary(runs[edge.child.name], runs[stock.child.name]),
                  "edge tls / edge": ratio_summary(runs[edge_tls.child.name], runs[edge.child.name])}
        stop_all([stock.child])

        held = []
        for n in SIZES:
            for gw in (edge, edge_tls):
                held.append(asyncio.run(_held(stack, gw, agents, n)))
                print(f"held: {held[-1]}", flush=True)
        herd = [asyncio.run(_herd(stack, gw, agents, HERD)) for gw in (edge, edge_tls)]
    finally:
        stop_all([g.child for g in gateways])
        stack.stop()
    result = {"short_requests": short, "short_ratios": ratios, "held": held, "herd": herd}
    print_table("empty polls over kept-alive connections (32 concurrent, best of 3 rounds)", short,
                ["name", "ops_per_s", "p50_ms", "p99_ms", "errors"])
    for name, r in ratios.items():
        print(f"{name}: median {r['median']} (range {r['min']}-{r['max']}, {r['rounds']} rounds)")
    print_table("held polls through one gateway process", held,
                ["held", "gateway", "kib_per_poll", "idle_cpu_pct", "seconds_to_hold_all"])
    print_table(f"reconnect herd after a gateway SIGKILL ({HERD} agents, retry every 0.5 s)", herd,
                ["agents", "gateway", "all_back_s", "failed_polls"])
    write_result("edge", result)
    return result


if __name__ == "__main__":
    run()
