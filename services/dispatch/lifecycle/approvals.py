"""Approvals, the two-person rule: deciding requests that wait for them.

A command or job the approval policy catches is created `awaiting_approval` (commands.py,
jobs.py): it exists, its targets frozen, but nothing of it is signed or claimable. Here an
operator other than its creator, whose scope covers every target and the command type,
approves or denies it. Each operator counts once. When the approvals reach the number the
policy asked for, its commands are signed (the payload names the approvers), made due (a
job's rollout window as at creation) and its agents woken, in the approval's transaction
with its audit event. Denied, or past its deadline (the reaper), it ends `denied`: nothing
of it is ever signed.

Two approvers racing for the last approval take turns on the request's row lock; the
second finds it started and is told so (409)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from fleetline import statuses
from services.common import audit
from services.common.db import Db
from services.common.operators import Operator
from services.common.validation import rfc3339
from services.dispatch.lifecycle import approval_policy, commands, issuing, jobs, rollout, schedules
from services.dispatch.lifecycle import queries as q
from services.dispatch.lifecycle.approval_policy import Policy
from services.dispatch.lifecycle.commands import (
    CommandNotFound,
    NewCommand,
    OutOfScope,
    Row,
    check_type,
)
from services.dispatch.signing.signer import CommandSigner


class ApprovalError(Exception):
    pass


class NotAwaiting(ApprovalError):
    """Decided already (approved, denied, cancelled or expired): 409."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


class OwnRequest(ApprovalError):
    """A creator may not approve its own request: 403."""


# --- the policy --------------------------------------------------------------------------------


async def read_policy(db: Db) -> Policy:
    row = await db.fetchrow(q.APPROVAL_POLICY)
    return Policy(tuple(row["rules"]), row["approvals"], row["expires_in_s"])


async def policy_row(db: Db) -> Row:
    return await db.fetchrow(q.APPROVAL_POLICY)


async def set_policy(db: Db, ctx: audit.Context, by: Operator, policy: Policy) -> Row:
    async with db.transaction():
        row = await db.fetchrow(q.SET_APPROVAL_POLICY, list(policy.rules), policy.approvals, policy.expires_in_s,
                                by.name)
        await audit.record(db, ctx, "approval_policy.update", "approval_policy", None, details=policy.as_dict())
    return row


# --- deciding ------------------------------------------------------------------------------------


def _approval(by: Operator, comment: str) -> dict:
    return {"operator": {"id": str(by.id), "name": by.name}, "at": rfc3339(datetime.now(timezone.utc)),
            "comment": comment}


def _check(row: Row, by: Operator, approving: bool, command_type: str) -> None:
    """In this order, once the request is known to be within the caller's scope (out of it,
    there is none: 404, whatever its status): decided already 409, its own 403, a command
    type outside the scope 403."""
    if row["status"] != statuses.AWAITING:
        raise NotAwaiting(row["status"])
    if approving and row["created_by_id"] == by.id:
        raise OwnRequest()
    check_type(by.scope, command_type)


async def decide_command(db: Db, command_id: uuid.UUID, by: Operator, ctx: audit.Context, approve: bool,
                         comment: str, signer: CommandSigner) -> Row:
    async with db.transaction():
        row = await db.fetchrow(q.LOCK_COMMAND_FOR_DECISION, command_id)
        if row is None or row["job_id"] is not None:  # a job's command is decided with its job
            raise CommandNotFound()
        if not by.scope.covers(row["agent_labels"] or {}):
            raise CommandNotFound()  # its agent is outside the scope: for this operator there is none
        _check(row, by, approve, row["type"])
        if not approve:
            return await _deny(db, ctx, "command", command_id, q.DENY_COMMAND, comment)
        approvals, counted = _with(row["approvals"], by, comment)
        started = approval_policy.approved_enough(approvals, row["approvals_required"])
        if started:
            now = datetime.now(timezone.utc)
            expires_at = now + timedelta(seconds=row["ttl_s"])
            (signed,) = await issuing.signed_payloads(
                db, signer, [command_id], [row["agent_id"]], NewCommand.of_row(row), now, expires_at,
                row["created_by_name"], _names(approvals))
            out = await db.fetchrow(q.START_APPROVED_COMMAND, command_id, approvals, signed, expires_at)
            await db.execute(q.NOTIFY_NEW_COMMAND, str(row["agent_id"]))
        else:
            out = await db.fetchrow(q.ADD_COMMAND_APPROVAL, command_id, approvals)
        await _recorded(db, ctx, "command", command_id, comment, counted, approvals, row["approvals_required"],
                        started)
    return out


async def decide_job(db: Db, job_id: uuid.UUID, by: Operator, ctx: audit.Context, approve: bool, comment: str,
                     signer: CommandSigner) -> Row:
    async with db.transaction():
        job = await db.fetchrow(q.LOCK_JOB_FOR_DECISION, job_id)
        if job is None or not by.scope.covers(job["target_labels"]):
            raise jobs.JobNotFound()  # as jobs.get: a job the scope does not cover is none of its
        _check(job, by, approve, job["command"]["type"])
        # Visible, yet a target may have left the scope since (its labels changed).
        if by.scope.labels and await db.fetchval(q.JOB_TARGET_OUTSIDE, job_id, by.scope.labels):
            raise OutOfScope("A target of this job is outside the operator's scope.")
        if not approve:
            await db.execute(q.DENY_JOB_COMMANDS, job_id, "denied")
            return await _deny(db, ctx, "job", job_id, q.DENY_JOB, comment)
        approvals, counted = _with(job["approvals"], by, comment)
        started = approval_policy.approved_enough(approvals, job["approvals_required"])
        if started:
            out = await _start_job(db, job, approvals, signer)
        else:
            out = await db.fetchrow(q.ADD_JOB_APPROVAL, job_id, approvals)
        await _recorded(db, ctx, "job", job_id, comment, counted, approvals, job["approvals_required"], started)
    return out


async def decide_schedule(db: Db, schedule_id: uuid.UUID, by: Operator, ctx: audit.Context, approve: bool,
                          comment: str) -> None:
    """As for a job: approved enough, the schedule becomes active (its first tick the next
    one from now); its runs need no approval after that (schedules.py)."""
    async with db.transaction():
        row = schedules.visible(await db.fetchrow(q.LOCK_SCHEDULE_FOR_DECISION, schedule_id), by.scope)
        _check(row, by, approve, row["command"]["type"])
        if not approve:
            await db.execute(q.SCHEDULE_DECIDED, schedule_id, row["approvals"], "denied", row["next_run_at"], "denied")
            await audit.record(db, ctx, "schedule.deny", "schedule", schedule_id, details={"comment": comment})
            return
        approvals, counted = _with(row["approvals"], by, comment)
        status, next_run_at = schedules.approved(row, approvals)
        await db.execute(q.SCHEDULE_DECIDED, schedule_id, approvals, status, next_run_at, None)
        await _recorded(db, ctx, "schedule", schedule_id, comment, counted, approvals, row["approvals_required"],
                        status == "active")


async def _start_job(db: Db, job: Row, approvals: list[dict], signer: CommandSigner) -> Row:
    """Sign every target's command (in slices, as creation does), make the window's first
    ones due and wake their agents; the job runs from here as if just created."""
    targets = await db.fetch(q.AWAITING_JOB_COMMANDS, job["id"])
    ids, agents = [t["id"] for t in targets], [t["agent_id"] for t in targets]
    new = NewCommand(agent_id=None, idempotency_key=None, **job["command"])
    now = datetime.now(timezone.utc)
    expires_at = now + timedelta(seconds=new.ttl_s)
    signed = await issuing.signed_payloads(db, signer, ids, agents, new, now, expires_at, job["created_by_name"],
                                           _names(approvals))
    due = rollout.due_at_start(job["max_in_flight"], jobs.canary_of(job), len(ids), whole=True)
    await db.execute(q.START_JOB_COMMANDS, job["id"], ids, signed, expires_at, due)
    started = await db.fetchrow(q.START_APPROVED_JOB, job["id"], approvals)
    await db.execute(q.NOTIFY_AGENTS, agents[:due])
    return started


def _with(approvals: list, by: Operator, comment: str) -> tuple[list[dict], bool]:
    """The approvals with this operator's added, and whether it counted (each operator once)."""
    if any(a["operator"]["id"] == str(by.id) for a in approvals):
        return list(approvals), False
    return [*approvals, _approval(by, comment)], True


def _names(approvals: list[dict]) -> list[str]:
    return [a["operator"]["name"] for a in approvals]


async def _deny(db: Db, ctx: audit.Context, kind: str, target_id: uuid.UUID, statement: str, comment: str) -> Row:
    out = await db.fetchrow(statement, target_id, "denied")
    await audit.record(db, ctx, f"{kind}.deny", kind, target_id, details={"comment": comment})
    return out


async def _recorded(db: Db, ctx: audit.Context, kind: str, target_id: uuid.UUID, comment: str, counted: bool,
                    approvals: list, required: int, started: bool) -> None:
    await audit.record(db, ctx, f"{kind}.approve", kind, target_id, details={
        "comment": comment, "counted": counted, "approvals": len(approvals), "required": required,
        "started": started})


# --- expiry (the reaper) ---------------------------------------------------------------------------


async def expire(db: Db, batch: int = 1000) -> dict[str, int]:
    """Requests past their approval deadline -> denied (approval_expired)."""
    async def jobs_step(n: int) -> int:
        return await db.fetchval(q.EXPIRE_AWAITING_JOBS, n)

    async def commands_step(n: int) -> int:
        return commands.updated_rows(await db.execute(q.EXPIRE_AWAITING_COMMANDS, n))

    return {"expired_approval_jobs": await commands.sweep(jobs_step, batch),
            "expired_approval_commands": await commands.sweep(commands_step, batch)}
