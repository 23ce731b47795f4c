"""Cancelling what was delivered (docs/api.md, cancelling a running command), in-process on a
real PostgreSQL: a command not started yet ends at once and no ack starts it; a running one
stays running with a signed cancel its agent's polls hand over (again only once it is due),
and ends `cancelled` when the agent says a cancel stopped it, or at its run timeout; a job's
cancel reaches its sent and running commands."""

from __future__ import annotations

import asyncio
import json

import pytest

from fleetline.cli.keys import ONLINE_KEY
from fleetline.signing import COMMAND_CONTEXT, b64url_decode, load_private, verify
from services.dispatch.lifecycle import commands, jobs
from tests.db import rows
from tests.db.test_command_operations import ADMIN, CTX, _queue
from tests.db.test_job_operations import _job

OK = {"exit_code": 0, "output": "so far", "started_at": None, "finished_at": None}


async def _running(db, sql, signer, policy, **over):
    agent = rows.agent(sql)
    cmd = await _queue(db, signer, agent, **over)
    assert (await commands.claim(db, agent, 1, policy)).commands
    assert (await commands.ack(db, agent, cmd))["status"] == "running"
    return agent, cmd


async def test_a_running_commands_cancel_is_signed_for_its_agent_and_handed_over_once_until_due(
        db, sql, signer, policy, key_dir):
    agent, cmd = await _running(db, sql, signer, policy)
    row = await commands.cancel(db, cmd, signer, ADMIN, CTX)
    assert row["status"] == "running" and row["cancel_requested_at"] is not None
    claim = await commands.claim(db, agent, 0, policy)  # claims nothing (cancels_only)
    assert not claim.commands and [c["command_id"] for c in claim.cancels] == [str(cmd)]
    signed = claim.cancels[0]["signed"]
    assert signed["kid"] == signer.kid
    payload = verify(load_private(str(key_dir / ONLINE_KEY)).public_key(), COMMAND_CONTEXT, signed)
    assert payload["cancel"] == str(cmd) and payload["agent_id"] == str(agent)
    assert payload["issued_by"] == ADMIN.name and "command_id" not in payload
    assert json.loads(b64url_decode(signed["payload"]))["cancel"] == str(cmd)
    # Handed over: not again until it is due (30 s), so a held poll does not spin on it.
    assert not (await commands.claim(db, agent, 10, policy)).cancels
    sql.execute("UPDATE commands SET cancel_visible_at = now() WHERE id = %s", (cmd,))
    assert [c["command_id"] for c in (await commands.claim(db, agent, 10, policy)).cancels] == [str(cmd)]
    # Another agent's polls never see it.
    assert not (await commands.claim(db, rows.agent(sql), 10, policy)).cancels


async def test_asking_again_keeps_the_first_request_and_its_signature(db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    first = await commands.cancel(db, cmd, signer, ADMIN, CTX)
    signed = sql.execute("SELECT cancel_signed FROM commands WHERE id = %s", (cmd,)).fetchone()[0]
    again = await commands.cancel(db, cmd, signer, ADMIN, CTX)
    assert again["cancel_requested_at"] == first["cancel_requested_at"]
    assert sql.execute("SELECT cancel_signed FROM commands WHERE id = %s", (cmd,)).fetchone()[0] == signed


async def test_the_agents_cancelled_result_ends_it_cancelled_with_its_output_and_a_repeat_is_a_no_op(
        db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    await commands.cancel(db, cmd, signer, ADMIN, CTX)
    ended, changed = await commands.report(db, agent, cmd, "failed", {**OK, "exit_code": -15}, cancelled=True)
    assert changed and ended["status"] == "cancelled" and ended["result"]["output"] == "so far"
    again, changed = await commands.report(db, agent, cmd, "failed", {**OK, "exit_code": -15}, cancelled=True)
    assert not changed and again["status"] == "cancelled"
    assert not (await commands.claim(db, agent, 10, policy)).cancels  # final: nothing to hand over
    with pytest.raises(commands.AlreadyFinal):
        await commands.cancel(db, cmd, signer, ADMIN, CTX)


async def test_a_command_that_finished_before_the_cancel_reached_it_keeps_its_outcome(db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    await commands.cancel(db, cmd, signer, ADMIN, CTX)
    ended, _ = await commands.report(db, agent, cmd, "succeeded", OK)
    assert ended["status"] == "succeeded"


async def test_a_cancelled_result_without_a_cancel_asked_counts_as_what_it_reports(db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    ended, _ = await commands.report(db, agent, cmd, "failed", OK, cancelled=True)
    assert ended["status"] == "failed"


async def test_a_sent_command_cancelled_before_its_ack_never_starts(db, sql, signer, policy):
    agent = rows.agent(sql)
    cmd = await _queue(db, signer, agent)
    assert (await commands.claim(db, agent, 1, policy)).commands
    cancelled = await commands.cancel(db, cmd, signer, ADMIN, CTX)
    assert cancelled["status"] == "cancelled"
    answers = await asyncio.gather(*(commands.ack(db, agent, cmd) for _ in range(3)))
    assert {a["status"] for a in answers} == {"cancelled"}  # the agent must not run it
    assert rows.status(sql, cmd) == "cancelled"


async def test_an_ack_racing_the_cancel_either_starts_it_with_a_cancel_asked_or_never(db, sql, signer, policy):
    for _ in range(20):
        agent = rows.agent(sql)
        cmd = await _queue(db, signer, agent)
        await commands.claim(db, agent, 1, policy)
        acked, cancelled = await asyncio.gather(commands.ack(db, agent, cmd),
                                                commands.cancel(db, cmd, signer, ADMIN, CTX))
        if acked["status"] == "running":  # the ack won: the agent runs it and hears the cancel
            assert cancelled["status"] == "running" and cancelled["cancel_requested_at"] is not None
            assert [c["command_id"] for c in (await commands.claim(db, agent, 0, policy)).cancels] == [str(cmd)]
        else:
            assert acked["status"] == cancelled["status"] == "cancelled"


async def test_a_running_command_whose_agent_never_reports_ends_cancelled_at_its_run_timeout(
        db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    other_agent, overdue = await _running(db, sql, signer, policy)
    await commands.cancel(db, cmd, signer, ADMIN, CTX)
    sql.execute("UPDATE commands SET visible_at = now() - interval '1 s' WHERE id = ANY(%s)", ([cmd, overdue],))
    await commands.reap(db)
    assert rows.status(sql, cmd) == "cancelled"
    assert rows.status(sql, overdue) == "timed_out"  # no cancel asked: as before


async def test_a_jobs_cancel_ends_its_sent_commands_and_asks_each_running_ones_agent(db, sql, signer, policy):
    agents = [rows.agent(sql) for _ in range(6)]
    job = await _job(db, signer, agents)
    for a in agents[:4]:
        assert (await commands.claim(db, a, 1, policy)).commands  # 4 sent, 2 pending
    ids = {a: sql.execute("SELECT id FROM commands WHERE agent_id = %s", (a,)).fetchone()[0] for a in agents}
    for a in agents[:2]:
        await commands.ack(db, a, ids[a])  # 2 running
    cancelled = await jobs.cancel(db, job["id"], signer, ADMIN, CTX)
    assert cancelled["status"] == "cancelled"
    assert [rows.status(sql, ids[a]) for a in agents] == ["running"] * 2 + ["cancelled"] * 4
    for a in agents[:2]:
        assert [c["command_id"] for c in (await commands.claim(db, a, 0, policy)).cancels] == [str(ids[a])]
        await commands.report(db, a, ids[a], "failed", OK, cancelled=True)
    assert {rows.status(sql, ids[a]) for a in agents} == {"cancelled"}
    counts = (await jobs.counts(db, [job["id"]]))[job["id"]]
    assert counts["cancelled"] == 6 and sum(counts.values()) == 6
