"""A large job through a running dispatch: the request answers with the job and its frozen
target count before its commands exist, the counts add up while the materialiser makes
them, and a dispatch SIGKILLed mid-way is resumed by the next one, exactly once."""

from __future__ import annotations

import signal
import time

from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.support import HTTP, wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TARGETS = 6000
SLICE = {"FLEETLINE_JOB_SLICE_TARGETS": "20"}


def _bulk_agents(fleet, sql, n: int) -> None:
    fleet.register()  # leaves a registration token the bulk-inserted agents can name
    token = sql.execute("SELECT id FROM registration_tokens LIMIT 1").fetchone()[0]
    sql.execute("""
        INSERT INTO agents (id, machine_id, registration_token_id, hostname, labels)
        SELECT gen_random_uuid(), 'bulk-' || n, %s, 'bulk-' || n, '{"fleet": "large"}'
          FROM generate_series(1, %s) AS n""", (token, n))
    sql.execute("ANALYZE agents")


def _made(sql, job_id) -> tuple[int, int]:
    return sql.execute("SELECT materialised, (SELECT count(*) FROM commands WHERE job_id = %s) FROM jobs "
                       "WHERE id = %s", (job_id, job_id)).fetchone()


def test_a_large_job_answers_at_once_and_a_killed_dispatch_resumes_it_exactly_once(auth, start_dispatch, sql):
    from tests.integration.fleet import Fleet

    first = start_dispatch(**SLICE)
    fleet = Fleet(auth.url, first.url)
    _bulk_agents(fleet, sql, TARGETS)
    started = time.monotonic()
    resp = HTTP.post(f"{first.url}/api/v1/admin/jobs", headers=ADMIN,
                     json={"selector": {"labels": {"fleet": "large"}}, "command": {"type": "ping"}})
    answered_in = time.monotonic() - started
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["target_count"] == TARGETS and sum(job["counts"].values()) == TARGETS
    assert answered_in < 5.0  # the targets frozen, not their commands made (those take ~1 s each 2,000 here)
    wait_until(lambda: _made(sql, job["id"])[0] > 0, 30, 0.01, "the first slices")
    first.proc.send_signal(signal.SIGKILL)  # mid-way: some slices made, the rest queued
    first.proc.wait(10)
    materialised, made = _made(sql, job["id"])
    assert materialised == made and 0 < made < TARGETS, (materialised, made)
    second = start_dispatch(**SLICE)

    def whole() -> bool:  # the counts add up at every read while the next dispatch goes on
        counts = HTTP.get(f"{second.url}/api/v1/admin/jobs/{job['id']}", headers=ADMIN).json()["counts"]
        assert sum(counts.values()) == TARGETS, counts
        return _made(sql, job["id"]) == (TARGETS, TARGETS)

    wait_until(whole, 120, 0.05, "the rest, by the next dispatch")
    assert sql.execute("SELECT count(DISTINCT agent_id) FROM commands WHERE job_id = %s",
                       (job["id"],)).fetchone()[0] == TARGETS
    final = HTTP.get(f"{second.url}/api/v1/admin/jobs/{job['id']}", headers=ADMIN).json()
    assert final["counts"]["pending"] == TARGETS
