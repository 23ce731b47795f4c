"""Gateway: empty polls straight to dispatch vs through the gateway (aiohttp upstream
client) vs the same proxy shape on httpx, measured side by side in one run."""

from __future__ import annotations

import asyncio
import random

import aiohttp

from bench.harness import print_table, ratio_summary, seed_agents, start_stack, write_result
from bench.loadgen import Run, closed_loop
from fleetline.cli.pgembed import free_port
from fleetline.cli.procs import Child, child_env, stop_all, wait_ready

CONCURRENCY = 32
SECONDS = 5.0
AGENTS = 1000
ROUNDS = 3


async def _polls(name: str, base: str, agents: list[dict], concurrency: int = CONCURRENCY,
                 seconds: float = SECONDS) -> Run:
    rng = random.Random(7)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def op(i: int) -> int:
            a = agents[rng.randrange(len(agents))]
            async with session.get(f"{base}/api/v1/agents/{a['agent_id']}/commands",
                                   headers=a["headers"]) as resp:
                await resp.read()
                return 1 if resp.status == 200 else -1

        return await closed_loop(name, concurrency, seconds, op)


def run() -> dict:
    stack = start_stack()
    httpx_proxy = None
    try:
        agents = seed_agents(stack, AGENTS)
        port = free_port()
        httpx_proxy = Child("httpx-proxy", "bench.httpx_proxy",
                            ["--port", str(port), "--upstream", stack.dispatch_urls[0]], child_env({}), None)
        httpx_url = f"http://127.0.0.1:{port}"
        wait_ready(httpx_url, httpx_proxy)
        targets = {
            "direct to dispatch": stack.dispatch_urls[0],
            "gateway (aiohttp client)": stack.gateway_url,
            "proxy on httpx.AsyncClient": httpx_url,
        }
        runs: dict[str, list[Run]] = {k: [] for k in targets}
        serial: dict[str, list[Run]] = {k: [] for k in targets}
        for _ in range(ROUNDS):
            for name, url in targets.items():
                runs[name].append(asyncio.run(_polls(name, url, agents)))
                # One request at a time: the latency a hop adds without queueing.
                serial[name].append(asyncio.run(_polls(name, url, agents, 1, 3.0)))
    finally:
        if httpx_proxy:
            stop_all([httpx_proxy])
        stack.stop()

    median = {k: sorted(v, key=lambda r: r.rate)[len(v) // 2] for k, v in runs.items()}
    direct = median["direct to dispatch"]
    rows = []
    for name, r in median.items():
        row = r.row()
        ratio = ratio_summary(runs[name], runs["direct to dispatch"])
        row["vs_direct"] = ratio["median"]
        row["vs_direct_range"] = f"{ratio['min']}-{ratio['max']}"
        row["p50_added_ms"] = round(r.pct(50) - direct.pct(50), 2)
        rows.append(row)
    print_table(f"gateway: empty polls, {CONCURRENCY} concurrent, {SECONDS:.0f} s, median of {ROUNDS} rounds",
                rows, ["name", "ops_per_s", "vs_direct", "vs_direct_range", "p50_ms", "p50_added_ms",
                       "p99_ms", "errors"])
    lat_rows = []
    serial_direct = min(serial["direct to dispatch"], key=lambda r: r.pct(50))
    for name, rs in serial.items():
        r = min(rs, key=lambda r: r.pct(50))
        lat_rows.append({"name": name, "p50_ms": round(r.pct(50), 3), "p99_ms": round(r.pct(99), 3),
                         "p50_added_ms": round(r.pct(50) - serial_direct.pct(50), 3)})
    print_table("gateway: one request at a time (added latency without queueing)",
                lat_rows, ["name", "p50_ms", "p50_added_ms", "p99_ms"])
    result = {"concurrency": CONCURRENCY, "seconds": SECONDS, "rows": rows, "serial": lat_rows,
              "all_runs": {k: [r.row() for r in v] for k, v in runs.items()}}
    write_result("gateway", result)
    return result


if __name__ == "__main__":
    run()
