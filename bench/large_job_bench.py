"""A job of 100,000 targets: how long the request takes to answer (its targets frozen),
and how fast dispatch's materialiser then makes the signed commands in slices of
FLEETLINE_JOB_SLICE_TARGETS (5,000), the counts read through the API adding up all along.
PostgreSQL durable."""

from __future__ import annotations

import time

import httpx
import psycopg

from bench.harness import database_url, print_table, seed_agents, start_stack, write_result

TARGETS = 100_000


def run() -> dict:
    stack = start_stack()
    try:
        seed_agents(stack, TARGETS)
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        with httpx.Client(base_url=stack.gateway_url, headers=admin, timeout=120) as api, \
                psycopg.connect(database_url(stack), autocommit=True) as conn:
            started = time.monotonic()
            resp = api.post("/api/v1/admin/jobs", json={"selector": {"all_active": True},
                                                         "command": {"type": "ping"}})
            answered = time.monotonic() - started
            job = resp.json()
            assert resp.status_code == 201 and job["target_count"] == TARGETS, resp.text
            reads, sums = 0, set()
            while True:
                counts = api.get(f"/api/v1/admin/jobs/{job['id']}").json()["counts"]
                sums.add(sum(counts.values()))
                reads += 1
                made = conn.execute("SELECT materialised FROM jobs WHERE id = %s", (job["id"],)).fetchone()[0]
                if made == TARGETS:
                    break
                time.sleep(0.2)
            whole = time.monotonic() - started
    finally:
        stack.stop()
    rows = [{"targets": TARGETS, "answered_s": round(answered, 2), "all_commands_made_s": round(whole, 2),
             "targets_per_s": round(TARGETS / (whole - answered)), "count_reads": reads,
             "counts_always_added_up": sums == {TARGETS}}]
    print_table("a 100,000-target job: the answer, then its commands made in slices", rows,
                ["targets", "answered_s", "all_commands_made_s", "targets_per_s", "count_reads",
                 "counts_always_added_up"])
    result = {"rows": rows}
    write_result("large_job", result)
    return result


if __name__ == "__main__":
    run()
