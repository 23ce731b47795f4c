"""Approvals in-process on a real PostgreSQL: a request the policy catches waits unsigned and
unclaimable; another operator's approval (each counted once, enough of them) signs it and
starts it, rollout window included; its creator, an operator outside its scope, a denial or
its deadline never let it run; two approvers racing start it once."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from fleetline.signing import COMMAND_CONTEXT, verify
from services.common import audit
from services.common.operators import Operator, Scope
from services.dispatch.lifecycle import approvals, commands, jobs
from services.dispatch.lifecycle.approval_policy import Policy
from tests.db import rows
from tests.db.test_command_operations import ADMIN, CTX, _new
from tests.db.test_job_operations import _command, _counts

SHELL = Policy(({"command_types": ["shell"]},), approvals=1, expires_in_s=3600)
SCRIPT = {"script": "id"}


def operator(sql, name: str, labels: dict | None = None) -> Operator:
    """An operator row (the audit trail and created_by name it), as the guard would hand it."""
    op_id = uuid.uuid4()
    sql.execute("INSERT INTO operators (id, name, role) VALUES (%s, %s, 'operator')", (op_id, name))
    return Operator(op_id, name, "operator", Scope(labels or {}, ("*",)))


def ctx(by: Operator) -> audit.Context:
    return audit.Context(by.actor, f"req-{uuid.uuid4().hex[:6]}", "127.0.0.1")


async def _shell_job(db, signer, agents, by, policy=SHELL, max_in_flight=None):
    job, created = await jobs.create(db, jobs.NewJob(
        selector={"agent_ids": [str(a) for a in agents]}, command=_command(type="shell", params=SCRIPT),
        rollout={"max_in_flight": max_in_flight, "max_failures": None}, idempotency_key=None),
        signer, by, ctx(by), policy)
    assert created
    return job


def _signed(sql, job_id) -> list:
    return [r[0] for r in sql.execute("SELECT signed FROM commands WHERE job_id = %s", (job_id,)).fetchall()]


def payload(signer, signed: dict) -> dict:
    """What the agent reads of a signed command, its signature checked."""
    return verify(signer._key.public_key(), COMMAND_CONTEXT, signed)


async def test_a_caught_job_waits_unsigned_and_unclaimable_until_another_operator_approves(db, sql, signer, policy):
    agents = [rows.agent(sql) for _ in range(3)]
    ann, bob = operator(sql, "ann"), operator(sql, "bob")
    job = await _shell_job(db, signer, agents, ann, max_in_flight=2)
    assert job["status"] == "awaiting_approval" and job["approvals_required"] == 1
    assert await _counts(db, job["id"]) == {"awaiting_approval": 3}
    assert _signed(sql, job["id"]) == [None, None, None]  # nothing anyone could deliver or run
    assert [a for a in agents if (await commands.claim(db, a, 10, policy)).commands] == []
    with pytest.raises(approvals.OwnRequest):
        await approvals.decide_job(db, job["id"], ann, ctx(ann), True, "", signer)
    started = await approvals.decide_job(db, job["id"], bob, ctx(bob), True, "looks right", signer)
    assert started["status"] == "running" and [a["operator"]["name"] for a in started["approvals"]] == ["bob"]
    assert await _counts(db, job["id"]) == {"pending": 2, "waiting": 1}  # the window, as at creation
    payloads = [payload(signer, s) for s in _signed(sql, job["id"])]
    assert all(p["issued_by"] == "ann" and p["approved_by"] == ["bob"] for p in payloads)
    claimed = [a for a in agents if (await commands.claim(db, a, 10, policy)).commands]
    assert len(claimed) == 2
    events = sql.execute("SELECT action, actor_name, outcome FROM audit_events ORDER BY at").fetchall()
    assert events == [("job.create", "ann", "ok"), ("job.approve", "bob", "ok")]


async def test_two_approvals_needed_and_the_same_approver_counts_once(db, sql, signer, policy):
    agent = rows.agent(sql)
    ann, bob, cy = operator(sql, "ann"), operator(sql, "bob"), operator(sql, "cy")
    two = Policy(SHELL.rules, approvals=2, expires_in_s=3600)
    job = await _shell_job(db, signer, [agent], ann, two)
    once = await approvals.decide_job(db, job["id"], bob, ctx(bob), True, "", signer)
    again = await approvals.decide_job(db, job["id"], bob, ctx(bob), True, "again", signer)
    assert once["status"] == again["status"] == "awaiting_approval" and len(again["approvals"]) == 1
    assert not (await commands.claim(db, agent, 10, policy)).commands
    done = await approvals.decide_job(db, job["id"], cy, ctx(cy), True, "", signer)
    assert done["status"] == "running"
    (cmd,) = (await commands.claim(db, agent, 10, policy)).commands
    assert payload(signer, cmd["signed"])["approved_by"] == ["bob", "cy"]


async def test_an_approver_whose_scope_misses_one_target_finds_no_such_job(db, sql, signer):
    staging, prod = rows.agent(sql, labels={"env": "staging"}), rows.agent(sql, labels={"env": "prod"})
    ann, stager = operator(sql, "ann"), operator(sql, "stager", {"env": "staging"})
    job = await _shell_job(db, signer, [staging, prod], ann)
    for approving in (True, False):
        with pytest.raises(jobs.JobNotFound):  # as its GET: scope before existence
            await approvals.decide_job(db, job["id"], stager, ctx(stager), approving, "", signer)
    assert (await jobs.get(db, job["id"]))["approvals"] == []
    # Once decided, still nothing to it: not a 409 that would tell it what became of the job.
    await approvals.decide_job(db, job["id"], ADMIN, CTX, False, "no", signer)
    with pytest.raises(jobs.JobNotFound):
        await approvals.decide_job(db, job["id"], stager, ctx(stager), True, "", signer)


async def test_a_visible_job_whose_target_left_the_scope_since_is_refused(db, sql, signer):
    """A job is visible to a scope its target labels cover; should a target's labels change
    afterwards, approving it would reach outside the scope: 403."""
    agents = [rows.agent(sql, labels={"env": "staging"}) for _ in range(2)]
    ann, stager = operator(sql, "ann", {"env": "staging"}), operator(sql, "stager", {"env": "staging"})
    job = await _shell_job(db, signer, agents, ann)
    sql.execute("UPDATE agents SET labels = '{\"env\": \"prod\"}' WHERE id = %s", (agents[1],))
    with pytest.raises(commands.OutOfScope):
        await approvals.decide_job(db, job["id"], stager, ctx(stager), True, "", signer)


async def test_two_approvers_racing_for_the_last_approval_start_the_job_once(db, sql, signer):
    agents = [rows.agent(sql) for _ in range(20)]
    ann, bob, cy = operator(sql, "ann"), operator(sql, "bob"), operator(sql, "cy")
    job = await _shell_job(db, signer, agents, ann)
    results = await asyncio.gather(*(approvals.decide_job(db, job["id"], who, ctx(who), True, "", signer)
                                     for who in (bob, cy)), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["NotAwaiting", "Record"]
    started = sql.execute("SELECT count(*) FROM audit_events WHERE action = 'job.approve' "
                          "AND details->>'started' = 'true'").fetchone()[0]
    assert started == 1
    assert await _counts(db, job["id"]) == {"pending": 20}
    assert len({payload(signer, s)["approved_by"][0] for s in _signed(sql, job["id"])}) == 1  # one signing


async def test_denied_or_expired_requests_never_deliver(db, sql, signer, policy):
    agent = rows.agent(sql)
    ann, bob = operator(sql, "ann"), operator(sql, "bob")
    denied = await _shell_job(db, signer, [agent], ann)
    out = await approvals.decide_job(db, denied["id"], bob, ctx(bob), False, "not today", signer)
    assert (out["status"], out["denied_reason"]) == ("denied", "denied") and out["finished_at"] is not None
    assert await _counts(db, denied["id"]) == {"denied": 1}
    with pytest.raises(approvals.NotAwaiting):
        await approvals.decide_job(db, denied["id"], bob, ctx(bob), True, "", signer)
    late = await _shell_job(db, signer, [agent], ann)
    single, _ = await commands.create(db, _new(agent, type="shell", params=SCRIPT), signer, ann, ctx(ann), SHELL)
    assert single["status"] == "awaiting_approval" and single["signed"] is None
    sql.execute("UPDATE jobs SET approval_expires_at = now() - interval '1 s' WHERE id = %s", (late["id"],))
    sql.execute("UPDATE commands SET expires_at = now() - interval '1 s' WHERE id = %s", (single["id"],))
    assert await approvals.expire(db) == {"expired_approval_jobs": 1, "expired_approval_commands": 1}
    assert (await jobs.get(db, late["id"]))["denied_reason"] == "approval_expired"
    assert rows.status(sql, single["id"]) == "denied"
    assert not (await commands.claim(db, agent, 10, policy)).commands
    assert sql.execute("SELECT count(*) FROM commands WHERE signed IS NOT NULL").fetchone()[0] == 0


async def test_a_single_command_waits_for_its_approval_and_then_runs_signed_by_both_names(db, sql, signer, policy):
    agent = rows.agent(sql, labels={"env": "prod"})
    ann, bob = operator(sql, "ann"), operator(sql, "bob")
    prod = Policy(({"labels": {"env": "prod"}},), approvals=1, expires_in_s=600)
    made, _ = await commands.create(db, _new(agent), signer, ann, ctx(ann), prod)
    assert made["status"] == "awaiting_approval"
    staging_agent = rows.agent(sql, labels={"env": "staging"})
    other, _ = await commands.create(db, _new(staging_agent), signer, ann, ctx(ann), prod)
    assert other["status"] == "pending"  # the rule's labels are not this agent's
    assert [c["id"] for c in (await commands.claim(db, agent, 10, policy)).commands] == []
    approved = await approvals.decide_command(db, made["id"], bob, ctx(bob), True, "ok", signer)
    assert approved["status"] == "pending"
    (delivered,) = (await commands.claim(db, agent, 10, policy)).commands
    assert payload(signer, delivered["signed"])["issued_by"] == "ann"
    assert payload(signer, delivered["signed"])["approved_by"] == ["bob"]


async def test_a_policy_without_rules_catches_nothing(db, sql, signer):
    agent = rows.agent(sql)
    made, _ = await commands.create(db, _new(agent, type="shell", params=SCRIPT), signer, ADMIN, CTX,
                                    await approvals.read_policy(db))
    assert made["status"] == "pending" and made["signed"] is not None
