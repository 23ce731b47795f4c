"""Facts and `where` at fleet size (issue 29).

100,000 agents with realistic facts (about 2 KiB each: the built-in set of a Linux
machine, three disks, addresses, custom facts), straight into the table: a `where` dry run
with three requirements through the gateway (p50, p99 over ROUNDS), a 100,000-target
`where` job's answer time, and the table's size. Then 10,000 agents with real tokens
report their facts through the gateway, as an hour of a 10,000-machine fleet does at the
default interval: statements (one each) and WAL bytes per report.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp
import httpx
import psycopg

from bench.harness import database_url, print_table, seed_agents, start_stack, write_result

AGENTS = 100_000
REPORTERS = 10_000
ROUNDS = 20
WHERE = "facts.os.family = debian, facts.disk_free_gb < 5, labels.env in (prod, staging)"

SEED = """
WITH t AS (INSERT INTO registration_tokens (id, token_hash, max_uses, uses, expires_at)
           VALUES (gen_random_uuid(), gen_random_uuid()::text::bytea, %(n)s, %(n)s, now() + interval '1 day')
           RETURNING id)
INSERT INTO agents (id, machine_id, registration_token_id, hostname, labels, status, facts, facts_updated_at)
SELECT gen_random_uuid(), 'bench-facts-' || g, t.id, 'host-' || g,
       jsonb_build_object('env', (ARRAY['prod', 'staging', 'dev'])[1 + g %% 3],
                          'role', (ARRAY['web', 'db', 'cache', 'queue'])[1 + g %% 4]),
       'active',
       jsonb_build_object(
         'os', jsonb_build_object('name', 'Debian GNU/Linux', 'id', (ARRAY['debian', 'ubuntu', 'rhel'])[1 + g %% 3],
                                  'version', '12', 'family', (ARRAY['debian', 'debian', 'rhel'])[1 + g %% 3]),
         'kernel', '6.1.0-' || (g %% 30) || '-amd64', 'arch', 'x86_64', 'hostname', 'host-' || g,
         'fqdn', 'host-' || g || '.example.internal', 'cpu_count', 2 + g %% 62, 'memory_mb', 2048 * (1 + g %% 32),
         'disks', jsonb_build_array(
             jsonb_build_object('mount', '/', 'total_gb', 100, 'free_gb', (g::bigint * 7919) %% 100),
             jsonb_build_object('mount', '/var', 'total_gb', 500, 'free_gb', (g::bigint * 104729) %% 500),
             jsonb_build_object('mount', '/srv', 'total_gb', 1000, 'free_gb', (g::bigint * 1299709) %% 1000)),
         'disk_free_gb', (g::bigint * 7919) %% 100,
         'addresses', jsonb_build_array('10.' || (g / 65536) %% 256 || '.' || (g / 256) %% 256 || '.' || g %% 256,
                                        'fd00::' || to_hex(g)),
         'boot_time', '2026-12-01T00:00:00Z', 'agent_version', '1.0.0', 'python_version', '3.11.7',
         'custom', jsonb_build_object('rack', 'r' || g %% 40, 'owner', 'team-' || g %% 12,
                                      'notes', repeat('x', 1200))),
       now()
  FROM t, generate_series(1, %(n)s) g
"""


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * len(ordered)) - 1))]


async def _report(base: str, agents: list[dict], facts: dict) -> float:
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=64)) as client:
        gate = asyncio.Semaphore(64)

        async def one(agent: dict) -> int:
            async with gate:
                async with client.put(f"/api/v1/agents/{agent['agent_id']}/facts", json={"facts": facts},
                                      headers=agent["headers"]) as r:
                    await r.read()
                    return r.status

        began = time.monotonic()
        statuses = await asyncio.gather(*(one(a) for a in agents))
        assert set(statuses) == {200}, set(statuses)
        return time.monotonic() - began


def run() -> dict:
    stack = start_stack()
    try:
        url = database_url(stack)
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        api = httpx.Client(base_url=f"{stack.gateway_url}/api/v1/admin", headers=admin, timeout=300)
        with psycopg.connect(url, autocommit=True) as conn:
            began = time.monotonic()
            conn.execute(SEED, {"n": AGENTS})
            conn.execute("VACUUM ANALYZE agents")
            seeded_s = time.monotonic() - began
            size = conn.execute("SELECT pg_total_relation_size('agents'), pg_relation_size('agents'), "
                                "avg(pg_column_size(facts)) FROM agents").fetchone()
            expected = conn.execute(
                "SELECT count(*) FROM agents WHERE facts #>> '{os,family}' = 'debian' AND "
                "(facts ->> 'disk_free_gb')::numeric < 5 AND labels ->> 'env' IN ('prod', 'staging')").fetchone()[0]
        times = []
        for _ in range(ROUNDS):
            t0 = time.monotonic()
            r = api.post("/jobs", json={"selector": {"where": WHERE}, "command": {"type": "ping"}, "dry_run": True})
            times.append(time.monotonic() - t0)
            assert r.status_code == 200 and r.json()["target_count"] == expected, r.text
        t0 = time.monotonic()
        job = api.post("/jobs", json={"selector": {"where": "facts.cpu_count >= 2"}, "command": {"type": "ping"}})
        job_s = time.monotonic() - t0
        assert job.status_code == 201 and job.json()["target_count"] == AGENTS, job.text[:300]

        reporters = seed_agents(stack, REPORTERS)
        with psycopg.connect(url, autocommit=True) as conn:
            sample = conn.execute("SELECT facts FROM agents WHERE facts <> '{}' LIMIT 1").fetchone()[0]
            wal0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            report_s = asyncio.run(_report(stack.gateway_url, reporters, sample))
            wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (wal0,)).fetchone()[0]
        rows = [
            {"measure": f"where dry run, 3 requirements, {AGENTS:,} agents ({expected:,} match)",
             "p50": f"{_pct(times, 0.5) * 1000:.0f} ms", "p99": f"{_pct(times, 0.99) * 1000:.0f} ms"},
            {"measure": f"where job of {AGENTS:,} targets: its answer", "p50": f"{job_s * 1000:.0f} ms", "p99": ""},
            {"measure": "agents table (100,000 + 10,000 rows) / heap, facts per row",
             "p50": f"{size[0] / 2**20:.0f} MiB / {size[1] / 2**20:.0f} MiB", "p99": f"{float(size[2]):.0f} B"},
            {"measure": f"{REPORTERS:,} facts reports (an hour of 10,000 agents): statements, WAL",
             "p50": f"{REPORTERS:,}", "p99": f"{wal / 2**20:.1f} MiB ({wal / REPORTERS / 1024:.1f} KiB each)"},
            {"measure": "the same reports, 64 at a time: wall time", "p50": f"{report_s:.1f} s",
             "p99": f"{REPORTERS / report_s:.0f}/s"},
        ]
        print_table("Facts and where at fleet size", rows, ["measure", "p50", "p99"])
        result = {"agents": AGENTS, "seeded_s": round(seeded_s, 1), "dry_run_ms": [round(t * 1000, 1) for t in times],
                  "dry_run_p50_ms": round(_pct(times, 0.5) * 1000, 1), "dry_run_p99_ms": round(_pct(times, 0.99) * 1000, 1),
                  "matched": expected, "job_answer_ms": round(job_s * 1000), "table_bytes": size[0],
                  "heap_bytes": size[1], "facts_bytes_avg": float(size[2]), "reports": REPORTERS,
                  "report_wal_bytes": int(wal), "report_s": round(report_s, 2),
                  "dry_run_mean_ms": round(statistics.mean(times) * 1000, 1)}
        write_result("facts", result)
        return result
    finally:
        stack.stop()
