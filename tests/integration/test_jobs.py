"""Jobs with real concurrent pollers: the rollout window is never exceeded, a halt stops
deliveries, a cancel leaves nothing pending, counts always add up, replicas never
over-release; what the database holds is counted, not what the API says alone."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import httpx
import pytest

from tests.integration.dbstate import snapshot
from tests.integration.fleet import Agent, Fleet
from tests.integration.support import HTTP, wait_until

# Released (claimable now) or delivered, and not final: what max_in_flight bounds.
IN_WINDOW = """
SELECT count(*) FROM commands
 WHERE job_id = %s AND (status IN ('sent', 'running')
                        OR (status = 'pending' AND visible_at <> 'infinity'))
"""


class Worker:
    """A minimal agent in a thread: holds polls, acks what it gets, runs it for `run_s`,
    reports `outcome`. Counts what it ran."""

    def __init__(self, fleet: Fleet, agent: Agent, outcome: str = "succeeded", run_s: float = 0.02):
        self.fleet, self.agent, self.outcome, self.run_s = fleet, agent, outcome, run_s
        self.ran: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            resp = HTTP.get(f"{self.fleet.dispatch_url}/api/v1/agents/{self.agent.agent_id}/commands",
                             params={"wait": 1}, headers=self.agent.headers, timeout=30)
            if resp.status_code != 200:
                return
            for command in resp.json()["commands"]:
                if self.fleet.ack(self.agent, command["id"]).json()["status"] != "running":
                    continue
                self._stop.wait(self.run_s)  # the command's own run time
                # Counted before its result: the last result can end the job, and a test that
                # saw the job end must see every run counted (appending after raced it).
                self.ran.append(command["id"])
                self.fleet.result(self.agent, command["id"], status=self.outcome,
                                  exit_code=0 if self.outcome == "succeeded" else 1)

    def stop(self, join: bool = True) -> None:
        self._stop.set()
        if join:
            self._thread.join(5)


@pytest.fixture
def workers():
    started: list[Worker] = []

    def start(fleet: Fleet, agents: list[Agent], **kw) -> list[Worker]:
        new = [Worker(fleet, a, **kw) for a in agents]
        started.extend(new)
        return new

    yield start
    for w in started:
        w.stop(join=False)
    for w in started:
        w.stop()


def _agents(fleet: Fleet, n: int, **labels: str) -> list[Agent]:
    return [fleet.register(labels=labels) for _ in range(n)]


def _adds_up(job: dict) -> bool:
    return sum(job["counts"].values()) == job["target_count"]


def _watch(fleet: Fleet, sql, job_id: str, until, timeout: float = 60) -> tuple[int, dict]:
    """Sample the window (from the database) and the counts (from the API) until
    `until(job)`; the largest window seen and the last job. Every sample must add up."""
    widest, deadline = 0, time.monotonic() + timeout
    while True:
        widest = max(widest, sql.execute(IN_WINDOW, (job_id,)).fetchone()[0])
        job = fleet.job(job_id)
        assert _adds_up(job), job
        if until(job):
            return widest, job
        assert time.monotonic() < deadline, f"job did not get there: {job}"
        time.sleep(0.01)


def test_a_label_job_targets_the_matching_active_agents_as_they_were_at_creation(fleet, sql):
    prod = _agents(fleet, 3, env="prod", role="web")
    _agents(fleet, 1, env="dev", role="web")
    gone = fleet.register(labels={"env": "prod"})
    HTTP.delete(f"{fleet.auth_url}/api/v1/admin/agents/{gone.agent_id}", headers=fleet.admin)
    before = snapshot(sql)
    selector = {"labels": {"env": "prod"}}
    dry = fleet.run_job(selector, expect=200, dry_run=True)
    assert dry["target_count"] == 3 and len(dry["targets"]) == 3  # named (1.3), nothing created
    assert snapshot(sql) == before  # a dry run creates nothing

    job = fleet.run_job(selector, command={"type": "ping", "params": {"n": 1}, "max_retries": 2})
    assert job["status"] == "running" and job["target_count"] == 3
    assert job["counts"]["pending"] == 3 and _adds_up(job)
    assert job["command"]["max_retries"] == 2 and job["command"]["ttl_s"] == 14400
    fleet.register(labels={"env": "prod"})  # too late: targets are frozen
    rows = sql.execute("SELECT agent_id::text, signed IS NOT NULL, params FROM commands WHERE job_id = %s",
                       (job["id"],)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(a.agent_id for a in prod)
    assert all(signed and params == {"n": 1} for _, signed, params in rows)
    targets = fleet.targets(job["id"])
    assert {t["hostname"] for t in targets} == {f"host-{a.machine_id}" for a in prod}
    for agent in prod:  # each target gets its own signed command, and only that
        delivered = fleet.poll(agent)["commands"]
        assert len(delivered) == 1 and delivered[0]["signed"]["kid"]
        assert fleet.command(delivered[0]["id"])["job_id"] == job["id"]


def test_a_window_of_two_is_never_exceeded_and_the_counts_always_add_up(fleet, sql, workers):
    agents = _agents(fleet, 8, role="web")
    ran = workers(fleet, agents, run_s=0.1)
    job = fleet.run_job({"labels": {"role": "web"}}, rollout={"max_in_flight": 2})
    live = job["counts"]["pending"] + job["counts"]["sent"] + job["counts"]["running"]
    assert job["counts"]["waiting"] == 6 and live == 2  # the pollers may have claimed already
    widest, job = _watch(fleet, sql, job["id"], lambda j: j["status"] != "running")
    assert widest == 2
    assert job["status"] == "completed" and job["counts"]["succeeded"] == 8 and job["finished_at"]
    assert sorted(len(w.ran) for w in ran) == [1] * 8  # every target ran once
    assert sql.execute("SELECT count(*) FROM deliveries d JOIN commands c ON c.id = d.command_id "
                       "WHERE c.job_id = %s", (job["id"],)).fetchone()[0] == 8


def test_a_percentage_window_is_a_share_of_the_targets_rounded_up(fleet, sql):
    _agents(fleet, 5, role="db")
    job = fleet.run_job({"labels": {"role": "db"}}, rollout={"max_in_flight": "30%"})
    assert job["rollout"] == {"max_in_flight": "30%", "max_failures": None}
    assert job["counts"]["pending"] == 2 and job["counts"]["waiting"] == 3  # ceil(1.5)


def test_more_failures_than_allowed_halt_the_job_and_nothing_is_delivered_after(fleet, sql, workers):
    agents = _agents(fleet, 6, role="cache")
    workers(fleet, agents, outcome="failed")
    job = fleet.run_job({"labels": {"role": "cache"}},
                        rollout={"max_in_flight": 1, "max_failures": 1})
    _, job = _watch(fleet, sql, job["id"], lambda j: j["status"] != "running")
    assert job["status"] == "halted" and "max_failures 1" in job["halted_reason"]
    # Exceeded, not equalled: the second failure halts; the other four never run.
    assert job["counts"]["failed"] == 2 and job["counts"]["skipped"] == 4
    assert {t["status"] for t in fleet.targets(job["id"], status="skipped")} == {"skipped"}
    assert len(fleet.targets(job["id"], status="skipped")) == 4
    assert sql.execute("""
        SELECT count(*) FROM deliveries d JOIN commands c ON c.id = d.command_id
         WHERE c.job_id = %s AND d.delivered_at > (SELECT finished_at FROM jobs WHERE id = %s)""",
        (job["id"], job["id"])).fetchone()[0] == 0
    assert sql.execute("SELECT count(*) FROM commands WHERE job_id = %s AND status = 'pending'",
                       (job["id"],)).fetchone()[0] == 0


def test_cancel_leaves_nothing_pending_and_what_was_delivered_finishes(fleet, sql):
    agents = _agents(fleet, 4, role="queue")
    job = fleet.run_job({"labels": {"role": "queue"}}, rollout={"max_in_flight": 2})
    running = next(a for a in agents if fleet.poll(a)["commands"])
    command_id = sql.execute("SELECT id::text FROM commands WHERE job_id = %s AND agent_id = %s",
                             (job["id"], running.agent_id)).fetchone()[0]
    assert fleet.ack(running, command_id).json()["status"] == "running"

    cancelled = fleet.admin_call("POST", f"/jobs/{job['id']}/cancel")
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    assert cancelled["counts"]["running"] == 1 and cancelled["counts"]["cancelled"] == 3
    assert sql.execute("SELECT count(*) FROM commands WHERE job_id = %s AND status = 'pending'",
                       (job["id"],)).fetchone()[0] == 0
    assert all(not fleet.poll(a)["commands"] for a in agents)
    assert fleet.result(running, command_id).json()["status"] == "succeeded"
    after = fleet.job(job["id"])
    assert after["status"] == "cancelled" and after["counts"]["succeeded"] == 1 and _adds_up(after)
    assert fleet.admin_call("POST", f"/jobs/{job['id']}/cancel", expect=409)["error"] == "conflict"


def test_two_replicas_releasing_at_once_never_over_release(start_dispatch, auth, sql, workers):
    # Both reapers advance every running job every 50 ms, and results land on both.
    a, b = (start_dispatch(FLEETLINE_REAPER_INTERVAL_S="0.05") for _ in range(2))
    via_a, via_b = Fleet(auth.url, a.url), Fleet(auth.url, b.url)
    agents = [via_a.register(labels={"role": "batch"}) for _ in range(24)]
    workers(via_a, agents[::2], run_s=0.0)
    workers(via_b, agents[1::2], run_s=0.0)
    job = via_a.run_job({"labels": {"role": "batch"}}, rollout={"max_in_flight": 3})
    widest, job = _watch(via_b, sql, job["id"], lambda j: j["status"] != "running")
    assert widest == 3 and job["status"] == "completed" and job["counts"]["succeeded"] == 24
    assert sql.execute("SELECT max(delivery_count) FROM commands WHERE job_id = %s",
                       (job["id"],)).fetchone()[0] == 1


def test_revoking_a_target_cancels_its_pending_job_command_and_the_job_completes(start_dispatch, auth, sql):
    fleet = Fleet(auth.url, start_dispatch(FLEETLINE_REAPER_INTERVAL_S="0.2").url)
    done, gone = _agents(fleet, 2, role="edge")
    job = fleet.run_job({"labels": {"role": "edge"}})
    [command] = fleet.poll(done)["commands"]
    fleet.ack(done, command["id"])
    fleet.result(done, command["id"])
    assert fleet.job(job["id"])["status"] == "running"
    HTTP.delete(f"{fleet.auth_url}/api/v1/admin/agents/{gone.agent_id}", headers=fleet.admin)
    job = wait_until(lambda: (j := fleet.job(job["id"]))["status"] == "completed" and j, 10,
                     what="the job to complete")
    assert job["counts"]["succeeded"] == 1 and job["counts"]["cancelled"] == 1


def test_an_idempotency_key_answers_the_same_job_and_refuses_another_body(fleet, sql):
    _agents(fleet, 2, role="api")
    body = {"selector": {"labels": {"role": "api"}}, "command": {"type": "ping"}, "idempotency_key": "deploy-42"}

    def post(extra: dict | None = None) -> httpx.Response:
        return HTTP.post(f"{fleet.dispatch_url}/api/v1/admin/jobs", json={**body, **(extra or {})},
                          headers=fleet.admin, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(), range(8)))
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sql.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    assert sql.execute("SELECT count(*) FROM commands").fetchone()[0] == 2
    before = snapshot(sql)
    other = post({"command": {"type": "ping", "params": {"x": 1}}})
    assert other.status_code == 409 and other.json()["error"] == "conflict"
    assert snapshot(sql) == before


BAD_BODIES = [
    ({"command": {"type": "ping"}}, "selector"),
    ({"selector": {}, "command": {"type": "ping"}}, "selector"),
    ({"selector": {"labels": {"a": "b"}, "all_active": True}, "command": {"type": "ping"}}, "selector"),
    ({"selector": {"agent_ids": []}, "command": {"type": "ping"}}, "selector.agent_ids"),
    ({"selector": {"agent_ids": ["nope"]}, "command": {"type": "ping"}}, "selector.agent_ids"),
    ({"selector": {"agent_ids": "x"}, "command": {"type": "ping"}}, "selector.agent_ids"),
    ({"selector": {"labels": {}}, "command": {"type": "ping"}}, "selector.labels"),
    ({"selector": {"labels": {"a": 1}}, "command": {"type": "ping"}}, "selector.labels"),
    ({"selector": {"all_active": False}, "command": {"type": "ping"}}, "selector.all_active"),
    ({"selector": [], "command": {"type": "ping"}}, "selector"),
    ({"selector": {"all_active": True}}, "command"),
    ({"selector": {"all_active": True}, "command": {}}, "command.type"),
    ({"selector": {"all_active": True}, "command": {"type": "Bad Type"}}, "command.type"),
    ({"selector": {"all_active": True}, "command": {"type": "ping", "ttl_s": 0}}, "command.ttl_s"),
    ({"selector": {"all_active": True}, "command": {"type": "ping", "params": []}}, "command.params"),
    ({"selector": {"all_active": True}, "command": {"type": "ping"}, "rollout": {"max_in_flight": 0}},
     "rollout.max_in_flight"),
    ({"selector": {"all_active": True}, "command": {"type": "ping"}, "rollout": {"max_in_flight": "0%"}},
     "rollout.max_in_flight"),
    ({"selector": {"all_active": True}, "command": {"type": "ping"}, "rollout": {"max_in_flight": "ten"}},
     "rollout.max_in_flight"),
    ({"selector": {"all_active": True}, "command": {"type": "ping"}, "rollout": {"max_failures": -1}},
     "rollout.max_failures"),
    ({"selector": {"all_active": True}, "command": {"type": "ping"}, "rollout": 3}, "rollout"),
    ({"selector": {"all_active": True}, "command": {"type": "ping"}, "dry_run": "yes"}, "dry_run"),
    ({"selector": {"labels": {"nobody": "here"}}, "command": {"type": "ping"}}, "selector"),
]


def test_bad_selectors_and_bodies_are_a_400_naming_the_field_and_change_nothing(fleet, sql):
    fleet.register(labels={"role": "x"})
    before = snapshot(sql)
    for body, field in BAD_BODIES:
        error = fleet.admin_call("POST", "/jobs", 400, json=body)
        assert error["error"] == "invalid_request" and error.get("field") == field, (body, error)
    assert snapshot(sql) == before


def test_unknown_or_revoked_agent_ids_are_named_in_the_400(fleet, sql):
    live, gone = fleet.register(), fleet.register()
    HTTP.delete(f"{fleet.auth_url}/api/v1/admin/agents/{gone.agent_id}", headers=fleet.admin)
    unknown = "00000000-0000-4000-8000-000000000000"
    before = snapshot(sql)
    error = fleet.admin_call("POST", "/jobs", 400, json={
        "selector": {"agent_ids": [live.agent_id, gone.agent_id, unknown]}, "command": {"type": "ping"}})
    assert error["field"] == "selector.agent_ids"
    assert gone.agent_id in error["detail"] and unknown in error["detail"] and live.agent_id not in error["detail"]
    assert snapshot(sql) == before


def test_jobs_page_newest_first_and_filter_by_status(fleet, sql):
    _agents(fleet, 1, role="pager")
    made = [fleet.run_job({"labels": {"role": "pager"}})["id"] for _ in range(3)]
    fleet.admin_call("POST", f"/jobs/{made[0]}/cancel")
    first = fleet.admin_call("GET", "/jobs", params={"limit": 2})
    second = fleet.admin_call("GET", "/jobs", params={"limit": 2, "before": first["next"]})
    assert [j["id"] for j in first["jobs"] + second["jobs"]] == made[::-1] and second["next"] is None
    cancelled = fleet.admin_call("GET", "/jobs", params={"status": "cancelled"})["jobs"]
    assert [j["id"] for j in cancelled] == [made[0]]
    assert fleet.admin_call("GET", "/jobs", 400, params={"status": "done"})["field"] == "status"
    assert fleet.admin_call("GET", "/jobs/00000000-0000-4000-8000-000000000000", 404)["error"] == "not_found"
    assert fleet.admin_call("GET", "/jobs/not-a-uuid/targets", 404)["error"] == "not_found"
