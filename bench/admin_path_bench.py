"""The admin path before and after a change, side by side in one run.

`python -m bench.admin_path_bench BASELINE_DIR` measures the same two admin requests against
a stack started from this checkout and from BASELINE_DIR (another checkout, for example
`git worktree add /tmp/before d7735f5`), alternating, three rounds each:
- listing commands (`GET /admin/commands?limit=10`) with the bootstrap token;
- queueing a ping (`POST /admin/commands`), one transaction.

Each round runs in its own process with PYTHONPATH set to the tree being measured, so the
services, the migrations and this harness all come from that tree. Only harness functions
older than the change are used, so any recent checkout can be the baseline."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path

CONCURRENCY = 16
SECONDS = 4.0
AGENTS = 500
ROUNDS = 3
HERE = Path(__file__).resolve().parent.parent


def measure() -> dict:
    """One round against a stack built from the tree on sys.path; returns ops/s per case."""
    import aiohttp

    from bench.harness import seed_agents, seed_backlog, start_stack
    from bench.loadgen import closed_loop

    async def loop(name, base, headers, method, path, body):
        rng = random.Random(1)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
            async def op(i: int) -> int:
                async with session.request(method, base + path, headers=headers,
                                           json=body(rng) if body else None) as resp:
                    await resp.read()
                    return 1 if resp.status < 400 else -1
            return await closed_loop(name, CONCURRENCY, SECONDS, op)

    stack = start_stack()
    try:
        agents = seed_agents(stack, AGENTS)
        seed_backlog(stack, agents, 20)
        base = stack.dispatch_urls[0]
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        listing = asyncio.run(loop("list", base, admin, "GET", "/api/v1/admin/commands?limit=10", None))
        queue = asyncio.run(loop("queue", base, admin, "POST", "/api/v1/admin/commands",
                                 lambda rng: {"agent_id": rng.choice(agents)["agent_id"], "type": "ping"}))
    finally:
        stack.stop()
    return {"list": listing.row(), "queue": queue.row()}


def _round(tree: Path) -> dict:
    # Run as a script, this file puts only its own folder on sys.path: `bench` and the
    # services come from PYTHONPATH, the tree being measured.
    out = subprocess.run([sys.executable, __file__, "--measure"], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(baseline: Path) -> dict:
    from bench.harness import print_table, write_result

    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(ROUNDS):
        runs["before"].append(_round(baseline))
        runs["after"].append(_round(HERE))
    rows, ratios = [], {}
    for case in ("list", "queue"):
        med = {}
        for side in ("before", "after"):
            rates = sorted(r[case]["ops_per_s"] for r in runs[side])
            med[side] = rates[len(rates) // 2]
            p99 = sorted(r[case]["p99_ms"] for r in runs[side])[len(rates) // 2]
            rows.append({"name": f"{case}, {side}", "ops_per_s": med[side], "p99_ms": p99})
        per_round = [a[case]["ops_per_s"] / b[case]["ops_per_s"] for a, b in zip(runs["after"], runs["before"], strict=True)]
        ratios[case] = {"median": round(sorted(per_round)[len(per_round) // 2], 3),
                        "min": round(min(per_round), 3), "max": round(max(per_round), 3)}
    print_table(f"admin path, bootstrap token, {CONCURRENCY} concurrent, through dispatch, "
                f"median of {ROUNDS} alternating rounds; before = {baseline}", rows, ["name", "ops_per_s", "p99_ms"])
    for case, r in ratios.items():
        print(f"{case} after/before: median {r['median']} (range {r['min']}-{r['max']})")
    result = {"baseline": str(baseline), "rows": rows, "ratios": ratios, "all_runs": runs}
    write_result("admin_path", result)
    return result


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure"]:
        print(json.dumps(measure()))
    else:
        compare(Path(sys.argv[1]).resolve())
