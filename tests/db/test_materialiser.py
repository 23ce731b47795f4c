"""Large jobs made in slices in the background: the request freezes the targets and answers
with the job and its target count, nothing locked and no command yet; the materialiser
makes the commands a slice at a time with the counts adding up at every instant; a cancel
or a halt during it stops it; two materialisers never make the same slice; one that died
mid-way is resumed by another, exactly once."""

from __future__ import annotations

import asyncio

from services.dispatch.lifecycle import commands, jobs
from services.dispatch.lifecycle.materialiser import Materialiser
from tests.db import rows
from tests.db.test_command_operations import ADMIN, CTX
from tests.db.test_job_operations import OK, _command

SLICE = 4


async def _large_job(db, signer, agents, **rollout) -> dict:
    job, created = await jobs.create(db, jobs.NewJob(
        selector={"agent_ids": [str(a) for a in agents]}, command=_command(),
        rollout={"max_in_flight": rollout.get("max_in_flight"), "max_failures": rollout.get("max_failures")},
        idempotency_key=None), signer, ADMIN, CTX, in_request=SLICE)
    assert created
    return job


async def _counts(db, job_id) -> dict:
    return {k: v for k, v in (await jobs.counts(db, [job_id]))[job_id].items() if v}


def _commands(sql, job_id) -> int:
    return sql.execute("SELECT count(*) FROM commands WHERE job_id = %s", (job_id,)).fetchone()[0]


async def test_a_large_job_answers_with_its_targets_frozen_and_is_made_slice_by_slice(db, sql, signer, policy):
    agents = [rows.agent(sql) for _ in range(10)]
    job = await _large_job(db, signer, agents)
    assert (job["target_count"], job["materialised"], _commands(sql, job["id"])) == (10, 0, 0)
    assert await _counts(db, job["id"]) == {"waiting": 10}
    maker = Materialiser(db, signer, slice_size=SLICE)
    seen = []
    while (n := await maker.make_slice()) is not None:
        seen.append(n)
        counts = await _counts(db, job["id"])
        assert sum(counts.values()) == 10  # at every instant
    assert seen == [4, 4, 2]
    assert await _counts(db, job["id"]) == {"pending": 10}
    assert sql.execute("SELECT count(DISTINCT agent_id), count(*) FROM commands WHERE job_id = %s",
                       (job["id"],)).fetchone() == (10, 10)
    assert all(r[0] is not None for r in sql.execute("SELECT signed FROM commands WHERE job_id = %s", (job["id"],)))
    for a in agents:
        assert len((await commands.claim(db, a, 10, policy)).commands) == 1


async def test_the_window_holds_while_it_is_made_and_the_job_completes_only_when_whole(db, sql, signer, policy):
    agents = [rows.agent(sql) for _ in range(10)]
    job = await _large_job(db, signer, agents, max_in_flight=3)
    maker = Materialiser(db, signer, slice_size=SLICE)
    await maker.make_slice()
    assert await _counts(db, job["id"]) == {"pending": 3, "waiting": 7}
    await maker.drain()
    assert await _counts(db, job["id"]) == {"pending": 3, "waiting": 7}
    done = 0
    while done < 10:
        for a in agents:
            for c in (await commands.claim(db, a, 10, policy)).commands:
                await commands.report(db, a, c["id"], "succeeded", OK)
                done += 1
        await jobs.advance(db, job["id"])
    assert (await jobs.get(db, job["id"]))["status"] == "completed"


async def test_a_cancel_during_creation_stops_it_and_the_counts_still_add_up(db, sql, signer):
    agents = [rows.agent(sql) for _ in range(10)]
    job = await _large_job(db, signer, agents)
    maker = Materialiser(db, signer, slice_size=SLICE)
    await maker.make_slice()
    await jobs.cancel(db, job["id"], signer, ADMIN, CTX)
    assert await maker.make_slice() is None  # nothing more is made
    assert _commands(sql, job["id"]) == 4
    assert await _counts(db, job["id"]) == {"cancelled": 10}
    assert sql.execute("SELECT count(*) FROM job_targets").fetchone()[0] == 0


async def test_a_target_revoked_before_its_slice_gets_a_cancelled_command(db, sql, signer):
    agents = [rows.agent(sql) for _ in range(6)]
    job = await _large_job(db, signer, agents)
    sql.execute("UPDATE agents SET status = 'revoked', revoked_at = now() WHERE id = %s", (agents[5],))
    await Materialiser(db, signer, slice_size=SLICE).drain()
    assert await _counts(db, job["id"]) == {"pending": 5, "cancelled": 1}


async def test_two_materialisers_never_make_the_same_slice_and_a_second_finishes_what_one_began(db, sql, signer):
    agents = [rows.agent(sql) for _ in range(40)]
    job = await _large_job(db, signer, agents)
    first, second = Materialiser(db, signer, slice_size=SLICE), Materialiser(db, signer, slice_size=SLICE)
    await first.make_slice()  # then it "dies": what it committed stays, what it had not taken is queued
    made = await asyncio.gather(first.drain(), second.drain())
    assert sum(made) == 36
    assert sql.execute("SELECT count(DISTINCT agent_id), count(*) FROM commands WHERE job_id = %s",
                       (job["id"],)).fetchone() == (40, 40)
    assert (await jobs.get(db, job["id"]))["materialised"] == 40


async def test_a_halt_during_creation_stops_it_and_what_was_never_made_counts_as_skipped(db, sql, signer, policy):
    agents = [rows.agent(sql) for _ in range(10)]
    job = await _large_job(db, signer, agents, max_failures=0)
    maker = Materialiser(db, signer, slice_size=SLICE)
    await maker.make_slice()
    failing = [a for a in agents if (await commands.claim(db, a, 1, policy)).commands][0]
    cid = sql.execute("SELECT id FROM commands WHERE job_id = %s AND agent_id = %s",
                      (job["id"], failing)).fetchone()[0]
    await commands.report(db, failing, cid, "failed", {**OK, "exit_code": 1})
    assert (await jobs.advance(db, job["id"])).halt
    assert await maker.make_slice() is None
    assert _commands(sql, job["id"]) == 4
    # The slice's other three were delivered (they finish); the six never made are skipped.
    assert await _counts(db, job["id"]) == {"failed": 1, "sent": 3, "skipped": 6}
