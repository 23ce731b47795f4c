"""The two-person rule end to end: with a policy on `shell`, a `shell` job reaches no agent
(a real one, holding its poll) until a second operator approves it; then the agent runs it
and its own log names who asked and who approved. Refusals (its creator, a scope that misses
a target) change nothing and are in the audit trail; a denial delivers nothing, ever."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.support import held_polls, wait_until

BOOTSTRAP = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SHELL_RULE = {"rules": [{"command_types": ["shell"]}], "approvals": 1, "expires_in_s": 3600}


class World:
    """The fleet_stack, with operators of its own and agents named by label."""

    def __init__(self, stack):
        self.stack, self.dispatch_url = stack, stack.services["dispatch"].url
        self.agents: dict = {}

    def api(self, method, path, who=None, **kw):
        return self.stack.api(method, path, who, **kw)

    def operator(self, name, labels=None) -> dict:
        made = self.api("POST", "/operators", json={"name": name, "role": "operator",
                                                    "scope": {"labels": labels or {}, "command_types": ["*"]}})
        token = self.api("POST", f"/operators/{made.json()['id']}/tokens", json={}).json()["token"]
        return {"Authorization": f"Bearer {token}"}

    def agent(self, name: str, labels: list[str] = ()) -> str:
        self.agents[name] = self.stack.agent(name, extra_args=[a for label in labels for a in ("--label", label)])
        self.agents[name].wait_log("agent_started")
        return self.stack.agent_id(name)


@pytest.fixture
def world(fleet_stack) -> World:
    return World(fleet_stack)


def test_a_shell_job_reaches_no_agent_until_a_second_operator_approves_it(world, sql):
    assert world.api("PUT", "/approval-policy", json=SHELL_RULE).status_code == 200
    ann, bob = world.operator("ann"), world.operator("bob")
    agent_id = world.agent("a1")
    wait_until(lambda: held_polls(world.dispatch_url) == 1, 30, what="the agent's held poll")
    job = world.api("POST", "/jobs", ann, json={"selector": {"agent_ids": [agent_id]},
                                                "command": {"type": "shell", "params": {"argv": ["echo", "hi"]}}})
    assert job.status_code == 201 and job.json()["status"] == "awaiting_approval", job.text
    job_id = job.json()["id"]
    assert job.json()["counts"]["awaiting_approval"] == 1
    own = world.api("POST", f"/jobs/{job_id}/approve", ann, json={"comment": "mine"})
    assert (own.status_code, own.json()["error"]) == (403, "forbidden")
    # Nothing of it is signed, nothing was delivered; the agent's poll is still parked.
    assert sql.execute("SELECT status, signed, delivery_count FROM commands WHERE job_id = %s",
                       (job_id,)).fetchall() == [("awaiting_approval", None, 0)]
    assert held_polls(world.dispatch_url) == 1 and "command_started" not in world.agents["a1"].log()
    approved = world.api("POST", f"/jobs/{job_id}/approve", bob, json={"comment": "checked"})
    assert approved.status_code == 200 and approved.json()["status"] == "running", approved.text
    assert [a["operator"]["name"] for a in approved.json()["approvals"]] == ["bob"]
    done = wait_until(lambda: (j := world.api("GET", f"/jobs/{job_id}").json())["status"] == "completed" and j,
                      30, 0.1, "the job completed")
    assert done["counts"]["succeeded"] == 1
    started = [line for line in world.agents["a1"].log().splitlines() if "command_started" in line]
    assert len(started) == 1 and "issued_by=ann" in started[0] and "approved_by=bob" in started[0]
    trail = sql.execute("SELECT actor_name, action, outcome FROM audit_events WHERE target_id = %s ORDER BY at",
                        (job_id,)).fetchall()
    assert trail == [("ann", "job.create", "ok"), ("ann", "job.approve", "forbidden"), ("bob", "job.approve", "ok")]


def test_a_denied_command_never_runs_and_a_scope_that_misses_its_agent_cannot_approve(world, sql):
    world.api("PUT", "/approval-policy", json={"rules": [{"labels": {"env": "prod"}}], "approvals": 1})
    ann, stager = world.operator("ann"), world.operator("stager", {"env": "staging"})
    agent_id = world.agent("p1", ["env=prod"])
    cmd = world.api("POST", "/commands", ann, json={"agent_id": agent_id, "type": "ping"})
    assert cmd.status_code == 201 and cmd.json()["status"] == "awaiting_approval"
    cid = cmd.json()["id"]
    # Outside its scope, the request is none of its: 404 as for an unknown id, never 403
    # "outside scope" (which says it exists), nor later 409 (which says what became of it).
    unknown = world.api("POST", f"/commands/{uuid.uuid4()}/approve", stager, json={})
    refused = world.api("POST", f"/commands/{cid}/approve", stager, json={})
    assert refused.status_code == unknown.status_code == 404, refused.text
    assert (refused.json()["error"], refused.json()["detail"]) == (unknown.json()["error"], unknown.json()["detail"])
    denied = world.api("POST", f"/commands/{cid}/deny", BOOTSTRAP, json={"comment": "not now"})
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    again = world.api("POST", f"/commands/{cid}/approve", BOOTSTRAP, json={})
    assert again.status_code == 409
    assert world.api("POST", f"/commands/{cid}/approve", stager, json={}).status_code == 404
    assert sql.execute("SELECT signed, delivery_count FROM commands WHERE id = %s", (cid,)).fetchone() == (None, 0)
    assert "command_started" not in world.agents["p1"].log()


def test_the_policy_is_validated_and_only_admins_set_it(world):
    viewer_ish = world.operator("op")
    assert world.api("PUT", "/approval-policy", viewer_ish, json=SHELL_RULE).status_code == 403
    for bad in ({"rules": [{}]}, {"rules": [{"colour": "red"}]}, {"rules": [{"min_targets": 0}]},
                {"rules": "shell"}, {"approvals": 0}, {"rules": [{"all_active": False}]},
                {"rules": [{"labels": {}}]}, {"expires_in_s": 5}):
        resp = world.api("PUT", "/approval-policy", json=bad)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_request", (bad, resp.text)
    assert world.api("GET", "/approval-policy").json()["rules"] == []
    set_ = world.api("PUT", "/approval-policy", json={"rules": [{"min_targets": 100}, {"all_active": True}]})
    assert set_.json()["rules"] == [{"min_targets": 100}, {"all_active": True}]
    assert set_.json()["updated_by"] == "bootstrap"
    assert uuid.UUID(world.api("GET", "/whoami").json()["id"]).int == 0
