"""Schedules in-process on a real PostgreSQL: a due tick starts exactly one job (with its
schedule and tick on it, audited with the schedule as actor), however many tickers race;
overlap; catch-up after a gap for both policies; a creator who lost their authority pauses
the schedule; an approved schedule's runs need no approval and name its approvers; a tick
that fails in the middle leaves nothing, and the next one makes it once. Times are
arranged by writing next_run_at; nothing is slept for."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.dispatch.lifecycle import approvals, jobs, schedules
from services.dispatch.lifecycle.commands import OutOfScope
from tests.db import rows
from tests.db.test_approval_operations import SHELL, ctx, operator, payload

PING = {"type": "ping", "params": {}, "priority": 0, "ttl_s": 3600, "max_retries": 0, "ack_timeout_s": 300,
        "run_timeout_s": 3600}
NO_ROLLOUT = {"max_in_flight": None, "max_failures": None}


def spec(name: str = "nightly", **over) -> schedules.Spec:
    settings = dict(name=name, selector={"labels": {"role": "web"}}, command=PING, rollout=NO_ROLLOUT, cron=None,
                    timezone="UTC", interval_s=60, overlap="skip", catch_up="skip", enabled=True)
    return schedules.Spec(**{**settings, **over})


def due_in_the_past(sql, schedule_id, seconds: float) -> None:
    sql.execute("UPDATE schedules SET next_run_at = now() - make_interval(secs => %s) WHERE id = %s",
                (seconds, schedule_id))


def runs(sql, schedule_id) -> list[tuple]:
    return sql.execute("SELECT outcome, job_id IS NOT NULL, detail FROM schedule_runs WHERE schedule_id = %s "
                       "ORDER BY scheduled_for", (schedule_id,)).fetchall()


def jobs_of(sql, schedule_id) -> list[tuple]:
    return sql.execute("SELECT id, status, scheduled_for FROM jobs WHERE schedule_id = %s ORDER BY created_at",
                       (schedule_id,)).fetchall()


async def test_a_due_tick_starts_one_job_as_its_creator_audited_as_the_schedule(db, sql, signer):
    [rows.agent(sql, labels={"role": "web"}) for _ in range(2)]
    ann = operator(sql, "ann")
    made = await schedules.create(db, spec(), ann, ctx(ann))
    assert made["status"] == "active" and made["next_run_at"] > made["created_at"]
    assert await schedules.tick(db, signer) == {"started": 0, "skipped_overlap": 0, "skipped_missed": 0,
                                                "failed_to_start": 0}  # nothing due yet
    due_in_the_past(sql, made["id"], 1)
    tick_at = sql.execute("SELECT next_run_at FROM schedules WHERE id = %s", (made["id"],)).fetchone()[0]
    assert (await schedules.tick(db, signer))["started"] == 1
    [(job_id, status, scheduled_for)] = jobs_of(sql, made["id"])
    assert status == "running" and scheduled_for == tick_at
    job = await jobs.get(db, job_id)
    assert job["created_by_name"] == "ann" and job["target_count"] == 2
    assert runs(sql, made["id"]) == [("started", True, None)]
    actor = sql.execute("SELECT actor_type, actor_id, actor_name FROM audit_events WHERE action = 'schedule.run'"
                        ).fetchone()
    assert actor == ("schedule", made["id"], "nightly")
    after = await schedules.get(db, made["id"])
    assert after["next_run_at"] > tick_at and after["last_outcome"] == "started"


async def test_racing_tickers_start_each_tick_once(db, sql, signer):
    rows.agent(sql, labels={"role": "web"})
    ann = operator(sql, "ann")
    made = [await schedules.create(db, spec(f"s{i}", overlap="allow"), ann, ctx(ann)) for i in range(10)]
    for m in made:
        due_in_the_past(sql, m["id"], 1)
    counted = await asyncio.gather(*(schedules.tick(db, signer) for _ in range(8)))
    assert sum(c["started"] for c in counted) == 10
    assert sql.execute("SELECT count(*) FROM jobs WHERE schedule_id IS NOT NULL").fetchone() == (10,)
    assert sql.execute("SELECT count(*) FROM schedule_runs").fetchone() == (10,)


async def test_overlap_skip_records_a_tick_whose_previous_job_runs_and_allow_starts_it(db, sql, signer):
    rows.agent(sql, labels={"role": "web"})
    ann = operator(sql, "ann")
    skip = await schedules.create(db, spec("skip"), ann, ctx(ann))
    allow = await schedules.create(db, spec("allow", overlap="allow"), ann, ctx(ann))
    for _ in range(2):
        for s in (skip, allow):
            due_in_the_past(sql, s["id"], 1)
        await schedules.tick(db, signer)
    assert [r[0] for r in runs(sql, skip["id"])] == ["started", "skipped_overlap"]
    assert [r[0] for r in runs(sql, allow["id"])] == ["started", "started"]
    assert len(jobs_of(sql, skip["id"])) == 1 and len(jobs_of(sql, allow["id"])) == 2


@pytest.mark.parametrize("catch_up,expected", [
    ("skip", [("skipped_missed", False, "11 ticks missed")]),
    ("latest", [("skipped_missed", False, "10 ticks missed"), ("started", True, None)]),
])
async def test_ticks_missed_while_no_dispatch_ran_follow_catch_up(db, sql, signer, catch_up, expected):
    rows.agent(sql, labels={"role": "web"})
    ann = operator(sql, "ann")
    made = await schedules.create(db, spec(catch_up=catch_up), ann, ctx(ann))
    due_in_the_past(sql, made["id"], 10 * 60 + 45)  # down for ten minutes: the latest tick is 45 s old
    await schedules.tick(db, signer)
    got = runs(sql, made["id"])
    assert [(o, j) for o, j, _ in got] == [(o, j) for o, j, _ in expected]
    assert all(e is None or e in d for (_, _, d), (_, _, e) in zip(got, expected, strict=True))
    assert await schedules.tick(db, signer) == {o: 0 for o in schedules.OUTCOMES}  # nothing due until the next


async def test_a_creator_disabled_since_pauses_the_schedule_at_its_next_tick(db, sql, signer):
    rows.agent(sql, labels={"role": "web"})
    ann = operator(sql, "ann")
    made = await schedules.create(db, spec(), ann, ctx(ann))
    sql.execute("UPDATE operators SET disabled_at = now() WHERE id = %s", (ann.id,))
    due_in_the_past(sql, made["id"], 1)
    assert (await schedules.tick(db, signer))["failed_to_start"] == 1
    after = await schedules.get(db, made["id"])
    assert after["status"] == "paused" and "disabled" in after["paused_reason"]
    assert runs(sql, made["id"]) == [("failed_to_start", False, "its creator is disabled")]
    assert jobs_of(sql, made["id"]) == []
    assert sql.execute("SELECT outcome FROM audit_events WHERE action = 'schedule.run'").fetchone() == ("failed",)
    due_in_the_past(sql, made["id"], 1)
    assert (await schedules.tick(db, signer))["failed_to_start"] == 0  # paused: not ticked again


async def test_a_scope_narrowed_since_pauses_it_too(db, sql, signer):
    rows.agent(sql, labels={"role": "web"})
    ann = operator(sql, "ann")
    made = await schedules.create(db, spec(), ann, ctx(ann))
    sql.execute("""UPDATE operators SET scope = '{"labels": {}, "command_types": ["shell"]}' WHERE id = %s""",
                (ann.id,))
    due_in_the_past(sql, made["id"], 1)
    await schedules.tick(db, signer)
    assert "outside its creator's scope" in (await schedules.get(db, made["id"]))["paused_reason"]


async def test_no_target_at_a_tick_is_recorded_and_the_schedule_goes_on(db, sql, signer):
    ann = operator(sql, "ann")
    made = await schedules.create(db, spec(), ann, ctx(ann))
    due_in_the_past(sql, made["id"], 1)
    await schedules.tick(db, signer)
    assert runs(sql, made["id"]) == [("failed_to_start", False, "no active agent matches its selector")]
    assert (await schedules.get(db, made["id"]))["status"] == "active"


async def test_an_approved_schedules_runs_need_no_approval_and_name_its_approvers(db, sql, signer):
    agent = rows.agent(sql, labels={"role": "web"})
    ann, bob = operator(sql, "ann"), operator(sql, "bob")
    shell = {**PING, "type": "shell", "params": {"argv": ["true"]}}
    made = await schedules.create(db, spec(command=shell), ann, ctx(ann), SHELL)
    assert made["status"] == "awaiting_approval"
    due_in_the_past(sql, made["id"], 1)
    assert (await schedules.tick(db, signer))["started"] == 0  # not active: never ticked
    with pytest.raises(approvals.OwnRequest):
        await approvals.decide_schedule(db, made["id"], ann, ctx(ann), True, "mine")
    await approvals.decide_schedule(db, made["id"], bob, ctx(bob), True, "looks right")
    approved = await schedules.get(db, made["id"])
    assert approved["status"] == "active" and [a["operator"]["name"] for a in approved["approvals"]] == ["bob"]
    due_in_the_past(sql, made["id"], 1)
    assert (await schedules.tick(db, signer))["started"] == 1
    [(job_id, status, _)] = jobs_of(sql, made["id"])
    assert status == "running"  # no approval asked of the run
    signed = sql.execute("SELECT signed FROM commands WHERE job_id = %s AND agent_id = %s",
                         (job_id, agent)).fetchone()[0]
    assert payload(signer, signed)["approved_by"] == ["bob"] and payload(signer, signed)["issued_by"] == "ann"


async def test_changing_an_approved_schedules_command_asks_for_approval_again(db, sql, signer):
    rows.agent(sql, labels={"role": "web"})
    ann, bob = operator(sql, "ann"), operator(sql, "bob")
    shell = {**PING, "type": "shell", "params": {"argv": ["true"]}}
    made = await schedules.create(db, spec(command=shell), ann, ctx(ann), SHELL)
    await approvals.decide_schedule(db, made["id"], bob, ctx(bob), True, "")
    paused = await schedules.update(db, made["id"], {"enabled": False}, ann, ctx(ann), SHELL)
    assert paused["status"] == "paused" and paused["approvals"]  # pausing keeps the approval
    changed = await schedules.update(db, made["id"], {"command": {**shell, "params": {"argv": ["reboot"]}}},
                                     ann, ctx(ann), SHELL)
    assert changed["status"] == "awaiting_approval" and changed["approvals"] == []
    denied = await approvals.decide_schedule(db, made["id"], bob, ctx(bob), False, "no")
    assert denied is None and (await schedules.get(db, made["id"]))["status"] == "denied"


async def test_a_tick_that_fails_in_the_middle_leaves_nothing_and_the_next_makes_it_once(db, sql, signer):
    rows.agent(sql, labels={"role": "web"})
    ann = operator(sql, "ann")
    made = await schedules.create(db, spec(), ann, ctx(ann))
    due_in_the_past(sql, made["id"], 1)
    before = sql.execute("SELECT next_run_at FROM schedules WHERE id = %s", (made["id"],)).fetchone()[0]

    class Broken:  # fails after the run row is inserted, while the job's commands are signed
        kid = signer.kid

        def sign(self, **_):
            raise RuntimeError("the signing key went away")

    with pytest.raises(RuntimeError):
        await schedules.tick_one(db, Broken(), made["id"])
    assert (await schedules.tick(db, Broken()))["started"] == 0  # the ticker logs it and goes on
    assert runs(sql, made["id"]) == [] and jobs_of(sql, made["id"]) == []
    assert sql.execute("SELECT next_run_at FROM schedules WHERE id = %s", (made["id"],)).fetchone()[0] == before
    assert (await schedules.tick(db, signer))["started"] == 1
    assert len(jobs_of(sql, made["id"])) == 1 and len(runs(sql, made["id"])) == 1


async def test_run_now_starts_a_job_as_a_tick_would_and_a_name_is_unique(db, sql, signer):
    rows.agent(sql, labels={"role": "web"})
    ann = operator(sql, "ann")
    made = await schedules.create(db, spec(), ann, ctx(ann))
    job = await schedules.run_now(db, signer, made["id"], ann, ctx(ann))
    assert job["schedule_id"] == made["id"] and job["status"] == "running"
    with pytest.raises(schedules.NameTaken):
        await schedules.create(db, spec(), ann, ctx(ann))
    await schedules.delete(db, made["id"], ann, ctx(ann))
    assert (await jobs.get(db, job["id"]))["status"] == "running"  # its jobs run on
    with pytest.raises(schedules.ScheduleNotFound):
        await schedules.get(db, made["id"])
    with pytest.raises(schedules.ScheduleNotFound):
        await schedules.get(db, uuid.uuid4())


async def test_a_scoped_operator_sees_only_schedules_within_its_scope(db, sql, signer):
    ann = operator(sql, "ann")
    web = await schedules.create(db, spec("web"), ann, ctx(ann))
    await schedules.create(db, spec("db", selector={"labels": {"role": "db"}}), ann, ctx(ann))
    carol = operator(sql, "carol", labels={"role": "web"})
    assert [r["name"] for r in await schedules.page(db, "", 100, carol.scope)] == ["web"]
    assert (await schedules.get(db, web["id"], carol.scope))["name"] == "web"
    with pytest.raises(OutOfScope):
        await schedules.create(db, spec("theirs", selector={"labels": {"role": "db"}}), carol, ctx(carol))


async def test_one_beat_ticks_every_due_schedule_however_many_batches_they_fill(db, sql, signer):
    """Before: one batch a beat, so a thousand due at once waited ten beats."""
    rows.agent(sql, labels={"role": "web"})
    ann = operator(sql, "ann")
    made = [await schedules.create(db, spec(f"b{i}", overlap="allow"), ann, ctx(ann)) for i in range(12)]
    for m in made:
        due_in_the_past(sql, m["id"], 1)
    assert (await schedules.tick(db, signer, batch=5))["started"] == 12
