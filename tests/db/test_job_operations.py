"""A job moving on (jobs.advance), in-process: the rollout window released as commands end,
a halt past the failure limit, completion; counts read from the commands."""

from __future__ import annotations

from services.dispatch.lifecycle import commands, jobs
from tests.db import rows
from tests.db.test_command_operations import ADMIN, CTX

OK = {"exit_code": 0, "output": "", "started_at": None, "finished_at": None}


def _command(**over) -> commands.NewCommand:
    settings = dict(agent_id=None, type="ping", params={}, priority=0, ttl_s=3600, max_retries=0,
                    ack_timeout_s=300, run_timeout_s=3600, idempotency_key=None)
    return commands.NewCommand(**{**settings, **over})


async def _job(db, signer, agents, max_in_flight=None, max_failures=None, canary=None) -> dict:
    job, created = await jobs.create(db, jobs.NewJob(
        selector={"agent_ids": [str(a) for a in agents]}, command=_command(),
        rollout={"max_in_flight": max_in_flight, "max_failures": max_failures, "canary": canary},
        idempotency_key=None),
        signer, ADMIN, CTX)
    assert created
    return job


async def _counts(db, job_id) -> dict:
    return {k: v for k, v in (await jobs.counts(db, [job_id]))[job_id].items() if v}


async def test_the_window_releases_one_command_as_each_ends_and_the_job_completes(db, sql, signer, policy):
    agents = [rows.agent(sql) for _ in range(5)]
    job = await _job(db, signer, agents, max_in_flight=2)
    assert await _counts(db, job["id"]) == {"pending": 2, "waiting": 3}
    released = [a for a in agents if (await commands.claim(db, a, 1, policy)).commands]
    assert len(released) == 2  # only the window's two are claimable
    for a in released:
        await commands.report(db, a, (await _command_of(sql, job, a)), "succeeded", OK)
    await jobs.advance(db, job["id"])
    assert await _counts(db, job["id"]) == {"succeeded": 2, "pending": 2, "waiting": 1}
    for _ in range(10):  # the rest, as the window lets them through: never more than 2 at once
        claimed = [a for a in agents if (await commands.claim(db, a, 1, policy)).commands]
        assert len(claimed) <= 2
        for a in claimed:
            await commands.report(db, a, (await _command_of(sql, job, a)), "succeeded", OK)
        await jobs.advance(db, job["id"])
        if (await jobs.get(db, job["id"]))["status"] == "completed":
            break
    done = await jobs.get(db, job["id"])
    assert done["status"] == "completed" and done["finished_at"] is not None
    assert await _counts(db, job["id"]) == {"succeeded": 5}


async def _command_of(sql, job, agent):
    return sql.execute("SELECT id FROM commands WHERE job_id = %s AND agent_id = %s",
                       (job["id"], agent)).fetchone()[0]


async def test_more_failures_than_allowed_halt_the_job_and_skip_what_was_not_delivered(db, sql, signer, policy):
    agents = [rows.agent(sql) for _ in range(6)]
    job = await _job(db, signer, agents, max_in_flight=2, max_failures=1)
    first_two = [a for a in agents if (await commands.claim(db, a, 1, policy)).commands]
    for a in first_two:
        await commands.report(db, a, await _command_of(sql, job, a), "failed", {**OK, "exit_code": 1})
    step = await jobs.advance(db, job["id"])
    assert step is not None
    halted = await jobs.get(db, job["id"])
    assert halted["status"] == "halted" and halted["halted_reason"]
    assert await _counts(db, job["id"]) == {"failed": 2, "skipped": 4}
    assert sql.execute("SELECT count(*) FROM commands WHERE job_id = %s AND status = 'pending'",
                       (job["id"],)).fetchone() == (0,)


async def _finish_claimed(db, sql, job, agents, policy, status="succeeded") -> list:
    claimed = [a for a in agents if (await commands.claim(db, a, 1, policy)).commands]
    for a in claimed:
        await commands.report(db, a, await _command_of(sql, job, a), status,
                              {**OK, "exit_code": 0 if status == "succeeded" else 1})
    await jobs.advance(db, job["id"])
    return claimed


async def test_a_canary_goes_alone_and_the_rest_follow_once_it_succeeded(db, sql, signer, policy):
    agents = [rows.agent(sql) for _ in range(5)]
    job = await _job(db, signer, agents, canary=1)
    assert await _counts(db, job["id"]) == {"pending": 1, "waiting": 4}
    await jobs.advance(db, job["id"])  # nothing proven yet: the rest still wait
    assert await _counts(db, job["id"]) == {"pending": 1, "waiting": 4}
    assert len(await _finish_claimed(db, sql, job, agents, policy)) == 1
    assert await _counts(db, job["id"]) == {"succeeded": 1, "pending": 4}  # no window: all at once
    assert len(await _finish_claimed(db, sql, job, agents, policy)) == 4
    assert (await jobs.get(db, job["id"]))["status"] == "completed"


async def test_a_failed_canary_halts_the_job_before_anything_else_is_delivered(db, sql, signer, policy):
    agents = [rows.agent(sql) for _ in range(4)]
    job = await _job(db, signer, agents, max_in_flight=2, canary=1)
    assert await _counts(db, job["id"]) == {"pending": 1, "waiting": 3}
    assert len(await _finish_claimed(db, sql, job, agents, policy, "failed")) == 1
    halted = await jobs.get(db, job["id"])
    assert halted["status"] == "halted" and "canary" in halted["halted_reason"]
    assert await _counts(db, job["id"]) == {"failed": 1, "skipped": 3}
