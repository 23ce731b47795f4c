"""Schedules: recurring jobs, each tick starting exactly one, with its creator's authority.

    (created) --the approval policy catches it--> awaiting_approval --approved--> active
                                                                    --denied-->   denied
    (created) --enabled--> active <--PATCH enabled--> paused
    active --its creator's authority fails at a tick--> paused (paused_reason)
    active|paused|awaiting_approval --selector, command or rollout changed, policy catches it--> awaiting_approval

A tick (`tick`, the ticker's beat in every dispatch replica) takes one due schedule's row
lock (SKIP LOCKED: a replica ticking it, or an operator changing it, is left alone), reads
the time in the database, asks schedule_rules.plan what is due, and in that one
transaction records the runs (primary key (schedule_id, scheduled_for): a tick happens
once), starts the job exactly as POST /jobs by the creator would (jobs.create, in a
savepoint: a refusal records the run `failed_to_start`), writes `schedule.run` to the audit
trail with the schedule as actor, and moves next_run_at on. A crash anywhere in between
rolls all of it back; the next look does it again, once.

An approved schedule's runs need no further approval: its jobs carry its approvals, and
their commands' signed payloads name its approvers.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleetline.ethos import Log
from services.common import audit
from services.common.audit import Actor
from services.common.db import Db
from services.common.operators import EVERYTHING, Operator, Scope
from services.dispatch.lifecycle import approval_policy, issuing, jobs
from services.dispatch.lifecycle import queries as q
from services.dispatch.lifecycle import schedule_rules as rules
from services.dispatch.lifecycle.approval_policy import NO_POLICY, Policy
from services.dispatch.lifecycle.commands import NewCommand, OutOfScope, Row, check_type
from services.dispatch.signing.signer import CommandSigner

_log = Log("dispatch", "schedules")
STATUSES = ("active", "paused", "awaiting_approval", "denied")
OUTCOMES = ("started", "skipped_overlap", "skipped_missed", "failed_to_start")
# What an approved schedule's change must be approved again for (docs/api.md).
APPROVED_FIELDS = ("selector", "command", "rollout")


class ScheduleError(Exception):
    """A schedule request the rules refuse; api_errors.py says how each is answered."""


class ScheduleNotFound(ScheduleError):
    pass


class NameTaken(ScheduleError):
    pass


class NotStartable(ScheduleError):
    """run-now of a schedule that is awaiting approval or denied."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class Spec:
    """A schedule's settings as an operator gives them (checked by the admin API)."""
    name: str
    selector: dict
    command: dict            # jobs.command_settings() of the job's command
    rollout: dict
    cron: str | None
    timezone: str
    interval_s: int | None
    overlap: str
    catch_up: str
    enabled: bool

    def timing(self, anchor: datetime) -> rules.Timing:
        return rules.Timing(self.cron, self.timezone, self.interval_s, anchor)

    @classmethod
    def of_row(cls, row: Row) -> "Spec":
        return cls(row["name"], row["selector"], row["command"], row["rollout"], row["cron"], row["timezone"],
                   row["interval_s"], row["overlap"], row["catch_up"], row["status"] != "paused")


def timing_of(row: Row) -> rules.Timing:
    return rules.Timing(row["cron"], row["timezone"], row["interval_s"], row["anchor_at"])


def actor(row: Row) -> Actor:
    """Who a schedule's runs are recorded as."""
    return Actor("schedule", row["id"], row["name"])


def visible(row: Row | None, scope: Scope) -> Row:
    """A schedule an operator may see: its selector within the scope (else there is none)."""
    if row is None:
        raise ScheduleNotFound()
    if scope.labels and rules.authority_problem(
            {"role": "operator", "scope": scope.as_dict(), "disabled_at": None}, row["selector"], "*") is not None:
        raise ScheduleNotFound()
    return row


async def _approvals_needed(db: Db, policy: Policy, spec: Spec, by: Operator) -> int:
    """As for a job of this selector and command now (its current targets within the scope)."""
    chosen = jobs.selection(spec.selector, by.scope)
    agents = [r[0] for r in await db.fetch(chosen.pick_sql, *chosen.args)] if chosen else []
    return await issuing.approvals_needed(db, policy, spec.command["type"], agents,
                                          all_active="all_active" in spec.selector)


def _status(required: int, enabled: bool) -> str:
    return "awaiting_approval" if required else ("active" if enabled else "paused")


async def create(db: Db, spec: Spec, by: Operator, ctx: audit.Context, policy: Policy = NO_POLICY) -> Row:
    check_type(by.scope, spec.command["type"])
    problem = rules.authority_problem({"role": by.role, "scope": by.scope.as_dict(), "disabled_at": None},
                                      spec.selector, spec.command["type"])
    if problem is not None:
        raise OutOfScope(f"This schedule is outside the operator's scope: {problem}.")
    schedule_id = uuid.uuid4()
    async with db.transaction():
        now = await db.fetchval("SELECT statement_timestamp()")
        required = await _approvals_needed(db, policy, spec, by)
        status = _status(required, spec.enabled)
        made = await db.fetchval(
            q.CREATE_SCHEDULE, schedule_id, spec.name, spec.selector, spec.command, spec.rollout, spec.cron,
            spec.timezone, spec.interval_s, now, spec.overlap, spec.catch_up, status,
            None if spec.enabled else f"paused by {by.name}", spec.timing(now).next_after(now), by.id, by.name,
            required)
        if made is None:
            raise NameTaken()
        await audit.record(db, ctx, "schedule.create", "schedule", schedule_id, details={
            **_described(spec), "approvals_required": required})
    return await get(db, schedule_id)


def _described(spec: Spec) -> dict:
    return {"name": spec.name, "selector": spec.selector, "type": spec.command["type"],
            "cron": spec.cron, "timezone": spec.timezone, "interval_s": spec.interval_s,
            "overlap": spec.overlap, "catch_up": spec.catch_up, "enabled": spec.enabled}


async def get(db: Db, schedule_id: uuid.UUID, scope: Scope = EVERYTHING) -> Row:
    return visible(await db.fetchrow(q.GET_SCHEDULE, schedule_id), scope)


async def page(db: Db, after_name: str, limit: int, scope: Scope = EVERYTHING) -> list[Row]:
    """By name, after `after_name`; limit + 1 rows (the caller tells whether there is more).
    Those outside the scope are left out."""
    rows = await db.fetch(q.LIST_SCHEDULES, after_name, limit + 1)
    out = []
    for row in rows:
        try:
            out.append(visible(row, scope))
        except ScheduleNotFound:
            continue
    return out


async def update(db: Db, schedule_id: uuid.UUID, changes: dict[str, Any], by: Operator, ctx: audit.Context,
                 policy: Policy = NO_POLICY) -> Row:
    """Any creation field. A new timing starts counting from now; `enabled` pauses and
    resumes (a resumed schedule's missed ticks follow its catch_up); a changed selector,
    command or rollout asks for approval again when the policy catches it."""
    async with db.transaction():
        row = visible(await db.fetchrow(q.LOCK_SCHEDULE, schedule_id), by.scope)
        check_type(by.scope, row["command"]["type"])
        old = Spec.of_row(row)
        spec = Spec(**{**old.__dict__, **changes})
        check_type(by.scope, spec.command["type"])
        problem = rules.authority_problem({"role": by.role, "scope": by.scope.as_dict(), "disabled_at": None},
                                          spec.selector, spec.command["type"])
        if problem is not None:
            raise OutOfScope(f"This schedule is outside the operator's scope: {problem}.")
        if spec.name != old.name and await db.fetchval(q.NAME_TAKEN, spec.name, schedule_id):
            raise NameTaken()
        now = row["now"]
        retimed = (spec.cron, spec.timezone, spec.interval_s) != (old.cron, old.timezone, old.interval_s)
        anchor = now if retimed else row["anchor_at"]
        next_run_at = spec.timing(anchor).next_after(now) if retimed else row["next_run_at"]
        approvals, required, status = row["approvals"], row["approvals_required"], row["status"]
        if any(getattr(spec, f) != getattr(old, f) for f in APPROVED_FIELDS) and status != "denied":
            required = await _approvals_needed(db, policy, spec, by)
            approvals = []
            status = "awaiting_approval" if required else status
        if status == "awaiting_approval" and not required:
            status = "active"
        if status in ("active", "paused") and "enabled" in changes:
            status = "active" if spec.enabled else "paused"
        reason = row["paused_reason"] if status == "paused" else None
        if status == "paused" and "enabled" in changes and not spec.enabled:
            reason = f"paused by {by.name}"
        await db.execute(q.UPDATE_SCHEDULE, schedule_id, spec.name, spec.selector, spec.command, spec.rollout,
                         spec.cron, spec.timezone, spec.interval_s, anchor, spec.overlap, spec.catch_up, status,
                         reason, next_run_at, approvals, required)
        await audit.record(db, ctx, "schedule.update", "schedule", schedule_id,
                           details={"changed": sorted(changes), "status": status})
    return await get(db, schedule_id)


async def delete(db: Db, schedule_id: uuid.UUID, by: Operator, ctx: audit.Context) -> None:
    async with db.transaction():
        row = visible(await db.fetchrow(q.LOCK_SCHEDULE, schedule_id), by.scope)
        check_type(by.scope, row["command"]["type"])
        await db.execute(q.DELETE_SCHEDULE, schedule_id)
        await audit.record(db, ctx, "schedule.delete", "schedule", schedule_id, details={"name": row["name"]})


async def runs(db: Db, schedule_id: uuid.UUID, before: datetime, limit: int, scope: Scope = EVERYTHING) -> list[Row]:
    await get(db, schedule_id, scope)
    return await db.fetch(q.RUNS_PAGE, schedule_id, before, limit + 1)


# --- ticks ------------------------------------------------------------------------------------


# Schedules ticked at once by one process: each tick is a dozen short statements on its own
# connection, so a thousand due together start within the API's 2 s only side by side
# (one at a time: p50 8 s, p99 16.5 s; bench/README.md). Below the pool's size, so polls
# and acks still find a connection.
CONCURRENT_TICKS = 8


async def tick(db: Db, signer: CommandSigner, batch: int = 200) -> dict[str, int]:
    """Every due schedule, until none is (the ticker's beat); what the runs were, counted."""
    counted = {o: 0 for o in OUTCOMES}
    gate = asyncio.Semaphore(CONCURRENT_TICKS)

    async def one(schedule_id: uuid.UUID) -> None:
        async with gate:
            try:
                for outcome in await tick_one(db, signer, schedule_id):
                    counted[outcome] += 1
            except Exception as exc:  # rolled back whole; one schedule's fault never holds up the rest
                _log.error("tick_failed", schedule_id=schedule_id, error=exc, exc_info=exc)

    while True:
        before = sum(counted.values())
        due = [r[0] for r in await db.fetch(q.DUE_SCHEDULES, batch)]
        await asyncio.gather(*(one(schedule_id) for schedule_id in due))
        # A full batch may hide more; one that moved nothing on (held by another replica,
        # or failing) waits for the next beat instead of spinning.
        if len(due) < batch or sum(counted.values()) == before:
            return counted


async def tick_one(db: Db, signer: CommandSigner, schedule_id: uuid.UUID) -> list[str]:
    """One schedule's due ticks, in one transaction; the outcomes of the runs recorded (none
    when another replica holds it or ticked it meanwhile)."""
    async with db.transaction():
        row = await db.fetchrow(q.LOCK_DUE_SCHEDULE, schedule_id)
        if row is None:
            return []
        now = row["now"]
        plan = rules.plan(timing_of(row), row["next_run_at"], now, row["catch_up"])
        outcomes = []
        if plan.missed and plan.missed_last is not None:
            outcomes.append(await _record(db, row, plan.missed_last, None, "skipped_missed",
                                          rules.missed_detail(plan)))
        if plan.start is not None:
            outcomes.append((await _run(db, signer, row, plan.start))[0])
        await db.execute(q.SET_NEXT_RUN, schedule_id, plan.next_run_at)
    return [o for o in outcomes if o]


async def run_now(db: Db, signer: CommandSigner, schedule_id: uuid.UUID, by: Operator, ctx: audit.Context) -> Row:
    """A job now, as a tick would start it (the creator's authority, the schedule's
    approvals); the caller must reach the schedule and its command type too."""
    async with db.transaction():
        row = visible(await db.fetchrow(q.LOCK_SCHEDULE, schedule_id), by.scope)
        check_type(by.scope, row["command"]["type"])
        if row["status"] in ("awaiting_approval", "denied"):
            raise NotStartable(row["status"])
        await audit.record(db, ctx, "schedule.run_now", "schedule", schedule_id)
        _, job_id = await _run(db, signer, row, row["now"], asked=True)
    assert job_id is not None  # asked: anything but a job raised
    return await jobs.get(db, job_id)


async def _record(db: Db, row: Row, tick_at: datetime, job_id: uuid.UUID | None, outcome: str,
                  detail: str | None) -> str | None:
    """A run and its audit event; None when this tick was recorded already."""
    if await db.fetchval(q.INSERT_RUN, row["id"], tick_at, job_id, outcome, detail) is None:
        return None
    await _audited(db, row, tick_at, job_id, outcome, detail)
    return outcome


async def _audited(db: Db, row: Row, tick_at: datetime, job_id: uuid.UUID | None, outcome: str,
                   detail: str | None) -> None:
    await audit.record(db, audit.Context(actor(row)), "schedule.run", "schedule", row["id"],
                       outcome="failed" if outcome == "failed_to_start" else "ok",
                       details={"scheduled_for": tick_at.isoformat(), "outcome": outcome,
                                "job_id": str(job_id) if job_id else None, "detail": detail})


async def _run(db: Db, signer: CommandSigner, row: Row, tick_at: datetime,
               asked: bool = False) -> tuple[str | None, uuid.UUID | None]:
    """The tick's run, in the caller's transaction: the creator's authority checked now, the
    overlap rule, then the job (in a savepoint; refused, the run says why). The outcome
    (None: this tick happened already) and the job. `asked`: run-now, by an operator, who
    is told why instead (its transaction rolls back) and whom the overlap rule leaves alone."""
    creator = await db.fetchrow(q.OPERATOR_BY_ID, row["created_by_id"])
    problem = rules.authority_problem(dict(creator) if creator else None, row["selector"], row["command"]["type"])
    if problem is not None:
        if asked:
            raise OutOfScope(f"The schedule's creator may not start it: {problem}.")
        await db.execute(q.PAUSE_SCHEDULE, row["id"], problem)
        _log.warning("schedule_paused", schedule_id=row["id"], reason=problem)
        return await _record(db, row, tick_at, None, "failed_to_start", problem), None
    if not asked and row["overlap"] == "skip" and await db.fetchval(q.LAST_JOB_LIVE, row["id"]):
        return await _record(db, row, tick_at, None, "skipped_overlap",
                             "the previous run's job has not finished"), None
    if await db.fetchval(q.INSERT_RUN, row["id"], tick_at, None, "started", None) is None:
        return None, None  # this tick happened already
    assert creator is not None
    by = Operator(creator["id"], creator["name"], creator["role"], Scope.of(creator["role"], creator["scope"]))
    new = jobs.NewJob(selector=row["selector"], command=NewCommand(agent_id=None, idempotency_key=None,
                                                                   **row["command"]),
                      rollout=row["rollout"], idempotency_key=None,
                      origin=jobs.Origin(row["id"], tick_at, list(row["approvals"])))
    try:
        async with db.transaction():  # a savepoint: a refused job leaves the run to say why
            job, _ = await jobs.create(db, new, signer, by, audit.Context(actor(row)))
    except (jobs.NoTargets, jobs.InactiveTargets, OutOfScope) as exc:
        if asked:
            raise
        detail = _refusal(exc)
        if isinstance(exc, OutOfScope):
            await db.execute(q.PAUSE_SCHEDULE, row["id"], detail)
        await db.execute(q.SET_RUN, row["id"], tick_at, None, "failed_to_start", detail)
        await _audited(db, row, tick_at, None, "failed_to_start", detail)
        return "failed_to_start", None
    await db.execute(q.SET_RUN, row["id"], tick_at, job["id"], "started", None)
    await _audited(db, row, tick_at, job["id"], "started", None)
    return "started", job["id"]


def _refusal(exc: Exception) -> str:
    if isinstance(exc, jobs.NoTargets):
        return "no active agent matches its selector"
    if isinstance(exc, jobs.InactiveTargets):
        return f"agents named are unknown or revoked: {', '.join(exc.ids[:20])}"
    return str(exc)


# --- approvals (approvals.py decides; this is what starting means for a schedule) -------------


def approved(row: Row, approvals: list[dict]) -> tuple[str, datetime]:
    """The status and next tick of a schedule whose approvals reached what it needs."""
    now = row["now"]
    status = "active" if approval_policy.approved_enough(approvals, row["approvals_required"]) else row["status"]
    return status, (timing_of(row).next_after(now) if status == "active" else row["next_run_at"])

