"""Jobs: one operator request, many agents. The one module that moves a job on.

    awaiting_approval --approved (approvals.py)--> running
    awaiting_approval --denied, or its deadline passed--> denied   (its commands: denied)
    awaiting_approval|running --operator--> cancelled       (undelivered and sent commands:
                                                             cancelled; running ones: a
                                                             signed cancel to each agent)
    running --every target final--> completed
    running --more failures than max_failures--> halted   (undelivered commands: skipped)

A job is a row plus one ordinary command per target, created in one transaction. Its
progress is read from those commands (rollout.py decides from the counts); `advance` is
the only place a running job changes, always under the job's row lock, so any number of
replicas may call it at once. It runs after a job command ends here (a result, a cancel)
and for every running job on the reaper's beat (commands ended by the reaper, by a
revocation, or in another replica).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from fleetline import statuses
from services.common import audit
from services.common.db import Db
from services.common.operators import EVERYTHING, Operator, Scope
from services.common.where import compile_requirements, parse
from services.dispatch.lifecycle import issuing, rollout
from services.dispatch.lifecycle import queries as q
from services.dispatch.lifecycle.approval_policy import NO_POLICY, Policy
from services.dispatch.lifecycle.commands import (
    NewCommand,
    OutOfScope,
    Row,
    cancel_signature,
    check_type,
    params_digest,
)
from services.dispatch.signing.signer import CommandSigner

# Past this many targets a job answers at once and is materialised in the background
# (FLEETLINE_JOB_SLICE_TARGETS: also the slice's size).
IN_REQUEST_TARGETS = 5000


class JobError(Exception):
    """A job request the rules refuse; api_errors.py says how each is answered."""


class JobNotFound(JobError):
    pass


class NoTargets(JobError):
    """The selector matches no active agent."""


class InactiveTargets(JobError):
    """Ids in an `agent_ids` selector that are unknown or revoked."""

    def __init__(self, ids: list[str]):
        super().__init__(", ".join(ids))
        self.ids = ids


class JobFinished(JobError):
    """Cancel of a job that is no longer running."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


class KeyReused(JobError):
    """The idempotency key names a job created from a different request."""


@dataclass(frozen=True)
class Origin:
    """A job a schedule's tick starts: which schedule, for which tick, and the schedule's
    approvals (the job carries them; every command's signed payload names the approvers)."""
    schedule_id: uuid.UUID
    scheduled_for: datetime
    approvals: list[dict]

    @property
    def approved_by(self) -> list[str]:
        return [a["operator"]["name"] for a in self.approvals]


@dataclass(frozen=True)
class NewJob:
    selector: dict          # exactly one of agent_ids, labels, all_active (as given)
    command: NewCommand     # the settings every target's command gets (agent_id unused)
    rollout: dict           # {"max_in_flight": int | "N%" | None, "max_failures": int | None}
    idempotency_key: str | None
    origin: Origin | None = None

    def request(self) -> dict:
        """What an idempotent repeat must match: the whole request, defaults filled in."""
        return {"selector": self.selector, "command": command_settings(self.command),
                "rollout": self.rollout}


def command_settings(new: NewCommand) -> dict:
    return {"type": new.type, "params": new.params, "priority": new.priority, "ttl_s": new.ttl_s,
            "max_retries": new.max_retries, "ack_timeout_s": new.ack_timeout_s,
            "run_timeout_s": new.run_timeout_s}


@dataclass(frozen=True)
class Selection:
    """How a selector picks targets within a scope: the statements, their arguments, and
    the labels every target is known to carry (the job's `target_labels`)."""
    targets_sql: str
    count_sql: str
    pick_sql: str  # the targets without their rows' locks (a large job: materialiser.py)
    args: list
    labels: dict
    names_sql: str = ""  # a dry run's first targets by name


def selection(selector: Mapping[str, Any], scope: Scope) -> Selection | None:
    """The selector's matches within the scope, written once for the targets and the
    dry-run count. None: a label selector the scope excludes outright (no targets)."""
    if "agent_ids" in selector:  # every id named was checked to lie within the scope
        return Selection(q.TARGETS_BY_IDS, q.COUNT_BY_IDS, q.PICK_BY_IDS,
                         [[uuid.UUID(i) for i in selector["agent_ids"]]], dict(scope.labels))
    wanted = dict(selector.get("labels") or {})
    if any(wanted.get(k, v) != v for k, v in scope.labels.items()):
        return None  # asks for env=prod within a scope of env=staging
    wanted.update(scope.labels)
    if "where" in selector:  # checked by the API; a stored job's selector parses as it did
        predicate, args = compile_requirements(parse(selector["where"]), 2)
        by_where = q.by_where(predicate)
        return Selection(*by_where[:3], [wanted, *args], wanted, by_where[3])
    if not wanted:
        return Selection(q.TARGETS_ALL_ACTIVE, q.COUNT_ALL_ACTIVE, q.PICK_ALL_ACTIVE, [], {})
    return Selection(q.TARGETS_BY_LABELS, q.COUNT_BY_LABELS, q.PICK_BY_LABELS, [wanted], wanted)


async def _check_named_ids(db: Db, selector: Mapping[str, Any], scope: Scope) -> None:
    if "agent_ids" in selector:
        ids = [uuid.UUID(i) for i in selector["agent_ids"]]
        if scope.labels:
            outside = [r[0] for r in await db.fetch(q.OUT_OF_SCOPE_IDS, ids, scope.labels)]
            if outside:
                raise OutOfScope(f"These agents are outside the operator's scope: {', '.join(outside[:20])}.")
        inactive = [r[0] for r in await db.fetch(q.NOT_ACTIVE_IDS, ids)]
        if inactive:
            raise InactiveTargets(inactive)


async def count_targets(db: Db, selector: Mapping[str, Any], by: Operator) -> tuple[int, list[Row]]:
    """A dry run: how many agents the job would target now, within the scope, and the
    first DRY_RUN_NAMES of them (id, hostname). Creates nothing."""
    await _check_named_ids(db, selector, by.scope)
    chosen = selection(selector, by.scope)
    if chosen is None:
        raise NoTargets()
    async with db.transaction():
        await db.execute(q.ALLOW_BITMAP_SCANS)
        count = await db.fetchval(chosen.count_sql, *chosen.args)
        named = await db.fetch(chosen.names_sql or q.names_of(chosen.pick_sql), *chosen.args) if count else []
    if not count:
        raise NoTargets()
    return count, named


async def create(db: Db, new: NewJob, signer: CommandSigner, by: Operator,
                 ctx: audit.Context, policy: Policy = NO_POLICY,
                 in_request: int = IN_REQUEST_TARGETS) -> tuple[Row, bool]:
    """The job and one signed command per target (the selector's matches within the
    operator's scope), its audit event, in one transaction; and whether it was created now
    (False: the idempotency key's job, for the same request). A job of more than
    `in_request` targets (not awaiting approval) freezes its targets instead, unlocked, and
    the materialiser makes their commands in slices (materialiser.py)."""
    if new.idempotency_key is not None:
        existing = await _same_request(db, new, by.scope)
        if existing is not None:
            return existing, False
    check_type(by.scope, new.command.type)
    job_id, settings = uuid.uuid4(), new.command
    created_at = datetime.now(timezone.utc)
    expires_at = created_at + timedelta(seconds=settings.ttl_s)
    async with db.transaction():
        await db.execute(q.ALLOW_BITMAP_SCANS)
        await _check_named_ids(db, new.selector, by.scope)
        chosen = selection(new.selector, by.scope)
        if chosen is None:
            raise NoTargets()
        agents = [r[0] for r in await db.fetch(chosen.pick_sql, *chosen.args)]
        if not agents:
            raise NoTargets()
        required = await issuing.approvals_needed(db, policy, new.command.type, agents,
                                                  all_active="all_active" in new.selector)
        large = len(agents) > in_request and not required
        if not large:  # made whole: the targets locked (a revocation racing with the job waits for it)
            agents = [r[0] for r in await db.fetch(chosen.targets_sql, *chosen.args)]
            if not agents:
                raise NoTargets()
        window = rollout.window_size(new.rollout["max_in_flight"], len(agents))
        deadline = created_at + timedelta(seconds=policy.expires_in_s) if required else None
        job = await db.fetchrow(
            q.CREATE_JOB, job_id, new.selector, command_settings(settings), new.rollout, window,
            new.rollout["max_failures"], len(agents), new.idempotency_key, created_at, by.id, by.name,
            chosen.labels, statuses.AWAITING if required else "running", required, deadline,
            0 if large else len(agents), new.origin.schedule_id if new.origin else None,
            new.origin.scheduled_for if new.origin else None, new.origin.approvals if new.origin else [])
        if job is None:  # a racing request with the same key won
            raise _Raced()
        if large:
            await db.execute(q.QUEUE_JOB_TARGETS, job_id, agents)
            await _record_created(db, ctx, new, job_id, len(agents), required)
            return job, True
        command_ids = [uuid.uuid4() for _ in agents]
        if required:  # nothing signed, nothing due: approvals.py signs and starts it
            await insert_commands(db, job_id, settings, command_ids, agents, [None] * len(agents), created_at,
                                  deadline, 0, by.id, by.name, statuses.AWAITING)
        else:
            signed = await issuing.signed_payloads(db, signer, command_ids, agents, settings, created_at, expires_at,
                                                   by.name, new.origin.approved_by if new.origin else None)
            due = rollout.due_at_start(window, new.rollout.get("canary"), len(agents), whole=True)
            await insert_commands(db, job_id, settings, command_ids, agents, signed, created_at, expires_at, due,
                                  by.id, by.name, "pending")
            await db.execute(q.NOTIFY_AGENTS, agents[:due])
        await _record_created(db, ctx, new, job_id, len(agents), required)
    return job, True


async def _record_created(db: Db, ctx: audit.Context, new: NewJob, job_id: uuid.UUID, targets: int,
                          required: int) -> None:
    settings = new.command
    await audit.record(db, ctx, "job.create", "job", job_id, details={
        "selector": new.selector, "type": settings.type, "params_sha256": params_digest(settings.params),
        "rollout": new.rollout, "target_count": targets, "idempotency_key": new.idempotency_key,
        "approvals_required": required})


async def insert_commands(db: Db, job_id: uuid.UUID, settings: NewCommand, ids: list[uuid.UUID],
                          agents: list[uuid.UUID], signed: list, created_at: datetime, expires_at: datetime | None,
                          due: int, by_id: uuid.UUID | None, by_name: str | None, status: str) -> None:
    """A job's commands, one per agent, in one statement: the first `due` claimable now,
    the rest waiting for the releaser (rollout.due_at_start says how many)."""
    await db.execute(
        q.CREATE_JOB_COMMANDS, ids, agents, job_id, settings.type, settings.params, settings.priority,
        settings.max_retries, settings.ack_timeout_s, settings.run_timeout_s, created_at, expires_at, due,
        signed, by_id, by_name, status)


class _Raced(Exception):
    pass


async def _same_request(db: Db, new: NewJob, scope: Scope) -> Row | None:
    """The job this idempotency key names, for the same request; None when there is none. A
    job the caller's scope does not cover is not its to see: 404, whatever its body."""
    existing = await db.fetchrow(q.JOB_BY_IDEMPOTENCY_KEY, new.idempotency_key)
    if existing is None:
        return None
    if not scope.covers(existing["target_labels"]):
        raise JobNotFound()
    stored = {"selector": existing["selector"], "command": existing["command"],
              "rollout": existing["rollout"]}
    if stored != new.request():
        raise KeyReused()
    return existing


async def create_once(db: Db, new: NewJob, signer: CommandSigner, by: Operator,
                      ctx: audit.Context, policy: Policy = NO_POLICY,
                      in_request: int = IN_REQUEST_TARGETS) -> tuple[Row, bool]:
    """create(), where losing a race for the idempotency key answers the winner's job."""
    try:
        return await create(db, new, signer, by, ctx, policy, in_request)
    except _Raced:
        existing = await _same_request(db, new, by.scope)
        if existing is None:  # the winner rolled back: nothing holds the key any more
            return await create(db, new, signer, by, ctx, policy, in_request)
        return existing, False


async def get(db: Db, job_id: uuid.UUID, scope: Scope = EVERYTHING) -> Row:
    """The job, if the scope covers its targets (else, for this operator, there is none)."""
    row = await db.fetchrow(q.GET_JOB, job_id, scope.labels)
    if row is None:
        raise JobNotFound()
    return row


async def counts(db: Db, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """Each job's counts by target status, from its commands."""
    by_job: dict[uuid.UUID, list] = {j: [] for j in job_ids}
    async with db.transaction():
        await db.execute(q.JOB_INDEX_ONLY)
        rows = await db.fetch(q.JOB_COUNTS, job_ids)
    for row in rows:
        by_job[row["job_id"]].append(row)
    return {j: rollout.tally(rows) for j, rows in by_job.items()}


async def page(db: Db, before: tuple, limit: int, status: str | None = None,
               scope: Scope = EVERYTHING) -> list[Row]:
    filters = [status] if status is not None else []
    return await db.fetch(q.LIST_JOBS[status is not None], *before, limit + 1, scope.labels, *filters)


async def targets(db: Db, job_id: uuid.UUID, before_agent: uuid.UUID, limit: int,
                  status: str | None = None) -> list[Row]:
    """One page of a job's targets (limit + 1 rows); the caller has checked the job exists."""
    filters = [status] if status is not None else []
    return await db.fetch(q.LIST_TARGETS[status is not None], job_id, before_agent, limit + 1, *filters)


async def cancel(db: Db, job_id: uuid.UUID, signer: CommandSigner, by: Operator, ctx: audit.Context) -> Row:
    """The job and every command of it not running yet, with its audit event, in one
    transaction; each running one gets a signed cancel, handed to its agent as a single
    command's cancel is (commands.cancel), and its agent's held polls wake."""
    async with db.transaction():
        check_type(by.scope, (await get(db, job_id, by.scope))["command"]["type"])
        if await db.fetchrow(q.LOCK_LIVE_JOB, job_id) is None:
            raise JobFinished((await get(db, job_id))["status"])
        job = await db.fetchrow(q.END_JOB, job_id, "cancelled", None, by.id, by.name)
        await db.execute(q.CANCEL_UNDELIVERED, job_id, False, by.id, by.name)
        await db.execute(q.DROP_JOB_TARGETS, job_id)
        await db.execute(q.CANCEL_SENT_OF_JOB, job_id, by.id, by.name)
        running = await db.fetch(q.RUNNING_OF_JOB, job_id)
        if running:
            at = datetime.now(timezone.utc)
            signed = []
            for n, r in enumerate(running, 1):
                signed.append(cancel_signature(signer, r["id"], r["agent_id"], by, at))
                if n % issuing.SIGN_SLICE == 0:
                    await asyncio.sleep(0)  # as issuing.signed_payloads: the loop keeps serving
            asked = await db.fetch(q.REQUEST_CANCELS, job_id, by.id, by.name, [r["id"] for r in running], signed)
            await db.execute(q.NOTIFY_AGENTS, sorted({r["agent_id"] for r in asked}))
        await audit.record(db, ctx, "job.cancel", "job", job_id, details={"running_cancelled": len(running)})
    return job


def canary_of(job: Row) -> int | None:
    """How many targets must succeed before the rest are released (rollout.canary)."""
    return (job["rollout"] or {}).get("canary")


async def advance(db: Db, job_id: uuid.UUID) -> rollout.Step | None:
    """Move one running job on: halt, complete or refill its window, as rollout.next_step
    decides from facts read under the job's lock. None when the job is not running."""
    async with db.transaction():
        job = await db.fetchrow(q.LOCK_RUNNING_JOB, job_id)
        if job is None:
            return None
        window, limit, canary = job["max_in_flight"], job["max_failures"], canary_of(job)
        counted_failures = limit + 1 if limit is not None else (1 if canary is not None else None)
        facts = await db.fetchrow(q.JOB_PROGRESS, job_id, window is not None or canary is not None,
                                  counted_failures, canary)
        step = rollout.next_step(rollout.Progress(**dict(facts)), window, limit, canary)
        if step.halt:
            await db.execute(q.END_JOB, job_id, "halted", step.why, None, None)
            await db.execute(q.CANCEL_UNDELIVERED, job_id, True, None, None)
            await db.execute(q.DROP_JOB_TARGETS, job_id)
        elif step.complete:
            await db.execute(q.END_JOB, job_id, "completed", None, None, None)
        elif step.release:
            await db.execute(q.RELEASE_WAITING, job_id, step.release)
    return step


async def advance_running(db: Db) -> dict[str, int]:
    """advance() for every running job (the reaper's beat); what happened, counted."""
    moved = {"halted": 0, "completed": 0, "released": 0}
    for (job_id,) in await db.fetch(q.RUNNING_JOBS):
        step = await advance(db, job_id)
        if step is not None:
            moved["halted"] += step.halt
            moved["completed"] += step.complete
            moved["released"] += step.release
    return moved
