"""The command state machine's operations, in-process on a real PostgreSQL: every move
checked in the rows it leaves, times arranged by writing them."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.common.audit import BOOTSTRAP_ID, Context
from services.common.operators import Operator, Scope
from services.dispatch.lifecycle import commands
from tests.db import rows

ADMIN = Operator(BOOTSTRAP_ID, "bootstrap", "admin", Scope())
CTX = Context(ADMIN.actor, "test-request", "127.0.0.1")


def _new(agent_id, **over) -> commands.NewCommand:
    settings = dict(type="ping", params={}, priority=0, ttl_s=3600, max_retries=2, ack_timeout_s=300,
                    run_timeout_s=3600, idempotency_key=None)
    return commands.NewCommand(agent_id=agent_id, **{**settings, **over})


async def _queue(db, signer, agent_id, by=None, ctx=None, **over) -> uuid.UUID:
    row, created = await commands.create(db, _new(agent_id, **over), signer, by or ADMIN, ctx or CTX)
    assert created
    return row["id"]


async def test_a_claim_takes_the_highest_priority_then_the_oldest_up_to_its_limit(db, sql, signer, policy):
    agent = rows.agent(sql)
    low = await _queue(db, signer, agent, priority=-5)
    first = await _queue(db, signer, agent)
    second = await _queue(db, signer, agent)
    urgent = await _queue(db, signer, agent, priority=50)
    claim = await commands.claim(db, agent, 3, policy)
    assert [r["id"] for r in claim.commands] == [urgent, first, second]
    assert [rows.status(sql, c) for c in (urgent, first, second, low)] == ["sent", "sent", "sent", "pending"]
    assert claim.poll_interval_s == policy.rapid_s  # it has work in flight
    assert (await commands.claim(db, agent, 10, policy)).commands[0]["id"] == low
    assert (await commands.claim(db, agent, 10, policy)).commands == []  # leased: not again


async def test_a_lapsed_lease_is_redelivered_counting_the_retry_until_they_are_used_up(db, sql, signer, policy):
    agent = rows.agent(sql)
    cmd = await _queue(db, signer, agent, max_retries=1)
    await commands.claim(db, agent, 1, policy)
    rows.lease_lapsed(sql, cmd)
    again = await commands.claim(db, agent, 1, policy)
    assert [r["id"] for r in again.commands] == [cmd]
    assert sql.execute("SELECT retry_count, delivery_count FROM commands WHERE id = %s", (cmd,)).fetchone() == (1, 2)
    rows.lease_lapsed(sql, cmd)
    assert (await commands.claim(db, agent, 1, policy)).commands == []  # retries used up
    moved = await commands.reap(db)
    assert moved["exhausted_leases"] == 1 and rows.status(sql, cmd) == "timed_out"


async def test_expired_commands_are_never_delivered_and_the_reaper_ends_them(db, sql, signer, policy):
    agent = rows.agent(sql)
    cmd = await _queue(db, signer, agent)
    rows.expired(sql, cmd)
    assert (await commands.claim(db, agent, 10, policy)).commands == []
    assert (await commands.reap(db))["expired"] == 1 and rows.status(sql, cmd) == "expired"


async def test_an_ack_starts_a_command_once_and_never_one_past_its_expiry(db, sql, signer, policy):
    agent = rows.agent(sql)
    cmd, late = await _queue(db, signer, agent), await _queue(db, signer, agent)
    with pytest.raises(commands.NotDelivered):
        await commands.ack(db, agent, cmd)
    await commands.claim(db, agent, 10, policy)
    answers = await asyncio.gather(*(commands.ack(db, agent, cmd) for _ in range(5)))
    assert {a["status"] for a in answers} == {"running"}
    rows.expired(sql, late)
    assert (await commands.ack(db, agent, late))["status"] == "expired"
    with pytest.raises(commands.CommandNotFound):
        await commands.ack(db, rows_agent := rows.agent(sql), cmd)  # another agent's command
    assert rows_agent != agent


async def test_a_result_ends_a_command_once_and_another_outcome_is_refused(db, sql, signer, policy):
    agent = rows.agent(sql)
    cmd = await _queue(db, signer, agent)
    await commands.claim(db, agent, 1, policy)
    await commands.ack(db, agent, cmd)
    result = {"exit_code": 0, "output": "ok", "started_at": None, "finished_at": None}
    first, ended = await commands.report(db, agent, cmd, "succeeded", result)
    assert ended and first["status"] == "succeeded"
    again, ended = await commands.report(db, agent, cmd, "succeeded", result)
    assert not ended and again["status"] == "succeeded"
    with pytest.raises(commands.OtherOutcome):
        await commands.report(db, agent, cmd, "failed", {**result, "exit_code": 1})
    with pytest.raises(commands.AlreadyFinal):
        await commands.cancel(db, cmd, signer, ADMIN, CTX)


async def test_concurrent_claims_never_hand_one_command_to_two_polls(db, sql, signer, policy):
    agent = rows.agent(sql)
    sql.execute("""INSERT INTO commands (id, agent_id, type, max_retries, ack_timeout_s, run_timeout_s,
                                         expires_at, visible_at, created_at)
                   SELECT gen_random_uuid(), %s, 'ping', 5, 300, 3600, now() + interval '1 day', now(),
                          now() - make_interval(secs => g)
                     FROM generate_series(1, 600) g""", (agent,))

    async def drain() -> list:
        got = []
        while claimed := (await commands.claim(db, agent, 7, policy)).commands:
            got += [r["id"] for r in claimed]
        return got

    handed = [c for batch in await asyncio.gather(*(drain() for _ in range(16))) for c in batch]
    assert len(handed) == 600 and len(set(handed)) == 600
    assert sql.execute("SELECT count(*), count(DISTINCT command_id) FROM deliveries").fetchone() == (600, 600)


async def test_a_revoked_agent_claims_nothing_and_its_undelivered_job_commands_end(db, sql, signer, policy):
    from services.dispatch.lifecycle import jobs

    agents = [rows.agent(sql) for _ in range(2)]
    job, _ = await jobs.create(db, jobs.NewJob(selector={"agent_ids": [str(a) for a in agents]},
                                               command=_new(None), rollout={"max_in_flight": None,
                                                                            "max_failures": None},
                                               idempotency_key=None), signer, ADMIN, CTX)
    one_by_one = await _queue(db, signer, agents[0])
    sql.execute("UPDATE agents SET status = 'revoked', revoked_at = now() WHERE id = %s", (agents[0],))
    with pytest.raises(commands.AgentRevoked):
        await commands.claim(db, agents[0], 10, policy)
    # The notification's handler (revocations.py) and the reaper's catch-up alike.
    assert await commands.cancel_revoked(db, agents[0]) == {job["id"]}
    assert await commands.cancel_revoked(db, agents[0]) == set()  # once
    assert rows.status(sql, one_by_one) == "pending"  # queued to it alone: the operator's to cancel
    sql.execute("UPDATE agents SET status = 'revoked', revoked_at = now() WHERE id = %s", (agents[1],))
    assert (await commands.reap(db))["revoked_agents"] == 1  # a notification nobody heard
    assert sql.execute("SELECT count(*) FROM commands WHERE job_id = %s AND status = 'cancelled'",
                       (job["id"],)).fetchone() == (2,)
