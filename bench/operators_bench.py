"""Named operators: what the guard and the audit trail cost on the admin path, side by side
in one run, and that the agents' path does not pass through either.

Closed loops through dispatch (no gateway), 16 concurrent, interleaved rounds:
- listing commands (`GET /admin/commands?limit=10`) as the bootstrap token, as an operator
  token, and as an operator scoped to half the agents (its listing joins the agents' labels);
- queueing commands (`POST /admin/commands`), each one a transaction with its audit event;
- empty polls, the agents' path, for scale.

The bootstrap token and an operator token take the same route through the guard (a digest,
a cache hit at most 5 s old), so their ratio is the cost of a named operator; the
scoped/unscoped ratio is the cost of a scope."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import httpx
import psycopg

from bench.harness import (
    database_url,
    print_table,
    ratio_summary,
    seed_agents,
    seed_backlog,
    start_stack,
    write_result,
)
from bench.loadgen import Run, closed_loop

CONCURRENCY = 16
ANSWERED: dict[int, int] = {}  # every response by status, warm-up included
SECONDS = 4.0
AGENTS = 1000
ROUNDS = 3


async def _loop(name: str, base: str, headers: dict, method: str, path, body=None) -> Run:
    rng = random.Random(1)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        async def op(i: int) -> int:
            target = path(rng) if callable(path) else path
            async with session.request(method, base + target, headers=headers,
                                       json=body(rng) if callable(body) else body) as resp:
                await resp.read()
                if method == "POST":
                    ANSWERED[resp.status] = ANSWERED.get(resp.status, 0) + 1
                return 1 if resp.status < 400 else -1
        return await closed_loop(name, CONCURRENCY, SECONDS, op)


def _operator(gateway: str, admin: dict, name: str, scope: dict) -> dict:
    made = httpx.post(f"{gateway}/api/v1/admin/operators", headers=admin,
                      json={"name": name, "role": "operator", "scope": scope}).json()
    token = httpx.post(f"{gateway}/api/v1/admin/operators/{made['id']}/tokens", headers=admin, json={}).json()
    return {"Authorization": f"Bearer {token['token']}"}


def run() -> dict:
    stack = start_stack()
    try:
        agents = seed_agents(stack, AGENTS)
        staging = [a for i, a in enumerate(agents) if i % 2 == 0]
        with psycopg.connect(database_url(stack), autocommit=True) as conn:
            conn.execute("UPDATE agents SET labels = '{\"env\": \"staging\"}' WHERE id = ANY(%s::uuid[])",
                         ([a["agent_id"] for a in staging],))
        seed_backlog(stack, agents, 20)
        dispatch, gateway = stack.dispatch_urls[0], stack.gateway_url
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        named = _operator(gateway, admin, "bench-operator", {"labels": {}, "command_types": ["*"]})
        scoped = _operator(gateway, admin, "bench-staging", {"labels": {"env": "staging"}, "command_types": ["*"]})
        listing = "/api/v1/admin/commands?limit=10"
        queue_body = lambda rng: {"agent_id": rng.choice(staging)["agent_id"], "type": "ping"}  # noqa: E731
        cases = {
            "list_bootstrap": ("list commands, bootstrap token", admin, "GET", listing, None),
            "list_operator": ("list commands, operator token", named, "GET", listing, None),
            "list_scoped": ("list commands, scoped operator", scoped, "GET", listing, None),
            "queue_operator": ("queue a command (+ audit event)", named, "POST", "/api/v1/admin/commands",
                               queue_body),
        }
        runs: dict[str, list[Run]] = {k: [] for k in [*cases, "poll"]}
        for _ in range(ROUNDS):
            for key, (name, headers, method, path, body) in cases.items():
                runs[key].append(asyncio.run(_loop(name, dispatch, headers, method, path, body)))
            seed_backlog(stack, agents, 0)
            runs["poll"].append(asyncio.run(_polls(dispatch, agents)))
            seed_backlog(stack, agents, 20)
        with psycopg.connect(database_url(stack), autocommit=True) as conn:
            events = conn.execute("SELECT count(*) FROM audit_events WHERE action = 'command.create'").fetchone()[0]
    finally:
        stack.stop()

    median = {k: sorted(v, key=lambda r: r.rate)[len(v) // 2] for k, v in runs.items()}
    rows = [median[k].row() for k in runs]
    ratios = {
        "operator_token_over_bootstrap": ratio_summary(runs["list_operator"], runs["list_bootstrap"]),
        "scoped_over_unscoped": ratio_summary(runs["list_scoped"], runs["list_operator"]),
    }
    print_table(f"operators: {CONCURRENCY} concurrent, through dispatch, {SECONDS:.0f} s, median of {ROUNDS} rounds",
                rows, ["name", "ops_per_s", "p50_ms", "p99_ms", "errors"])
    for name, r in ratios.items():
        print(f"{name}: median {r['median']} (range {r['min']}-{r['max']} over {r['rounds']} rounds)")
    created = ANSWERED.get(201, 0)
    print(f"commands queued by the operator (answered 201): {created}, their audit events: {events}")
    result = {"concurrency": CONCURRENCY, "seconds": SECONDS, "agents": AGENTS, "rows": rows, "ratios": ratios,
              "queued": created, "audit_events": events,
              "all_runs": {k: [r.row() for r in v] for k, v in runs.items()}}
    write_result("operators", result)
    return result


async def _polls(base: str, agents: list[dict]) -> Run:
    rng = random.Random(2)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        async def op(i: int) -> int:
            agent = rng.choice(agents)
            async with session.get(f"{base}/api/v1/agents/{agent['agent_id']}/commands?limit=10",
                                   headers=agent["headers"]) as resp:
                await resp.read()
                return 1 if resp.status < 400 else -1
        return await closed_loop("empty polls (agents' path)", CONCURRENCY, SECONDS, op)


if __name__ == "__main__":
    run()
