"""Live output: 100 agents streaming at once through dispatch (chunks/s, bytes/s, dispatch's
CPU), with operators following some of them (held reads of the output endpoint).

Each agent has one running command (claimed and acked over HTTP, as an agent would) and
sends chunks back to back, each at the offset the previous answer gave, in two shapes:
small chunks (a line or two, what a command printing steadily sends each second) and
64 KiB chunks (a burst). Dispatch's CPU is read from its process (psutil) over the run."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import psutil

from bench.harness import print_table, seed_agents, seed_backlog, start_stack, write_result
from bench.loadgen import closed_loop

AGENTS = 100
SECONDS = 5.0
FOLLOWERS = 10
SHAPES = {"small (120 B)": "x" * 119 + "\n", "large (64 KiB)": ("y" * 1023 + "\n") * 64}


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def _start_commands(base: str, agents: list[dict]) -> list[tuple[dict, str]]:
    running = []
    async with aiohttp.ClientSession() as session:
        for a in agents:
            url = f"{base}/api/v1/agents/{a['agent_id']}/commands"
            async with session.get(f"{url}?limit=1", headers=a["headers"]) as resp:
                cid = (await resp.json())["commands"][0]["id"]
            async with session.post(f"{url}/{cid}/ack", headers=a["headers"]) as resp:
                assert (await resp.json())["status"] == "running"
            running.append((a, cid))
    return running


async def _stream(base: str, admin: dict, running: list[tuple[dict, str]], data: str) -> tuple:
    offsets = {cid: 0 for _, cid in running}
    size = len(data.encode())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=AGENTS + FOLLOWERS)) as session:
        async def op(i: int) -> int:
            agent, cid = running[i]
            url = f"{base}/api/v1/agents/{agent['agent_id']}/commands/{cid}/output"
            async with session.post(url, headers=agent["headers"], json={"offset": offsets[cid], "data": data}) as r:
                body = await r.json()
                if r.status != 200:
                    return -1
                offsets[cid] = body["next_offset"]
                return 1

        async def follow(cid: str, stop: asyncio.Event) -> int:
            offset, reads = 0, 0
            while not stop.is_set():
                async with session.get(f"{base}/api/v1/admin/commands/{cid}/output",
                                       params={"offset": offset, "wait": 5}, headers=admin) as r:
                    offset = (await r.json())["next_offset"]
                    reads += 1
            return reads

        stop = asyncio.Event()
        followers = [asyncio.create_task(follow(cid, stop)) for _, cid in random.sample(running, FOLLOWERS)]
        run = await closed_loop("chunks", AGENTS, SECONDS, op)
        stop.set()
        reads = sum(await asyncio.gather(*followers))
    return run, size, reads


def run() -> dict:
    # Unlimited report rate: 100 agents sending back to back is past any sane per-agent limit.
    stack = start_stack(FLEETLINE_MAX_OUTPUT_BYTES=str(1 << 30))
    rows = []
    try:
        agents = seed_agents(stack, AGENTS)
        base = stack.dispatch_urls[0]
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        pid = next(c.proc.pid for c in stack.children if c.name == "dispatch-1")
        for shape, data in SHAPES.items():
            seed_backlog(stack, agents, 1)
            running = asyncio.run(_start_commands(base, agents))
            cpu0 = _cpu(pid)
            result, size, reads = asyncio.run(_stream(base, admin, running, data))
            cpu = (_cpu(pid) - cpu0) / (result.seconds + 0.5)  # the warm-up's half second too
            rows.append({"chunk": shape, "chunks_per_s": round(result.rate, 1),
                         "mib_per_s": round(result.rate * size / 1048576, 2),
                         "p50_ms": round(result.pct(50), 2), "p99_ms": round(result.pct(99), 2),
                         "dispatch_cpu_cores": round(cpu, 2),
                         "cpu_ms_per_chunk": round(1000 * cpu / result.rate, 3) if result.rate else None,
                         "follower_reads": reads, "errors": result.errors})
    finally:
        stack.stop()
    print_table(f"live output: {AGENTS} agents streaming back to back into one dispatch, {FOLLOWERS} operators "
                f"following, {SECONDS:.0f} s", rows,
                ["chunk", "chunks_per_s", "mib_per_s", "p50_ms", "p99_ms", "dispatch_cpu_cores", "cpu_ms_per_chunk",
                 "follower_reads", "errors"])
    result = {"agents": AGENTS, "seconds": SECONDS, "followers": FOLLOWERS, "rows": rows}
    write_result("output", result)
    return result


if __name__ == "__main__":
    run()
