"""The command state machine: the one module that decides every transition of a command.

    pending --claim--> sent --ack--> running --result--> succeeded | failed
                        |  \\                  \\
                        |   ack timeout,       run timeout --> timed_out
                        |   retries left --> sent (retry_count + 1, redelivered)
                        |   ack timeout, retries used up --> timed_out
    pending|sent --expires_at--> expired        pending|sent --cancel--> cancelled
    running --cancel--> running, a signed cancel handed to its agent at its polls, then
        --the agent stopped it and reports--> cancelled   (or --run timeout--> cancelled)
    sent|running --the agent refuses it (bad signature, unknown type)--> rejected
    pending (a job's) --its agent revoked--> cancelled
    awaiting_approval --approved (approvals.py signs it)--> pending
    awaiting_approval --denied, or its approval deadline passed--> denied
    awaiting_approval --cancel--> cancelled

Each operation below runs its one guarded statement (queries.py says why each lock and
guard is there) and returns what happened, or raises one of the exceptions below. The
`*_outcome` functions are the pure decisions: what a row found by a statement means.
HTTP handlers parse, call one operation and render a view (views.py); api_errors.py maps
these exceptions to API errors in one table.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Mapping

from fleetline import statuses
from fleetline.signing import canonical
from services.common import audit
from services.common.db import Db
from services.common.operators import EVERYTHING, Operator, Scope
from services.dispatch.lifecycle import issuing
from services.dispatch.lifecycle import queries as q
from services.dispatch.lifecycle.approval_policy import NO_POLICY, Policy
from services.dispatch.signing.signer import CommandSigner

STATUSES = statuses.COMMAND_STATUSES
LIVE = frozenset(statuses.COMMAND_LIVE)
FINAL = frozenset(statuses.COMMAND_FINAL)
OUTCOMES = statuses.OUTCOMES  # what an agent reports

# Every legal transition; the race tests check the SQL never produces anything else.
TRANSITIONS = frozenset({
    ("pending", "sent"), ("sent", "sent"), ("sent", "running"),
    ("sent", "succeeded"), ("sent", "failed"), ("running", "succeeded"), ("running", "failed"),
    ("sent", "rejected"), ("running", "rejected"),
    ("sent", "timed_out"), ("running", "timed_out"),
    ("pending", "expired"), ("sent", "expired"),
    ("pending", "cancelled"), ("sent", "cancelled"), ("running", "cancelled"),
    ("awaiting_approval", "pending"), ("awaiting_approval", "denied"), ("awaiting_approval", "cancelled"),
})

Row = Mapping[str, Any]


# --- what can go wrong ------------------------------------------------------------------


class CommandError(Exception):
    """A request the state machine refuses; api_errors.py says how each is answered."""


class UnknownAgent(CommandError):
    """The calling agent (from its token) has no row."""


class AgentRevoked(CommandError):
    """The calling agent was revoked."""


class CommandNotFound(CommandError):
    """No such command (for this agent)."""


class NoSuchTarget(CommandError):
    """An operator queued a command for an agent that does not exist."""


class TargetRevoked(CommandError):
    """An operator queued a command for a revoked agent."""


class NotDelivered(CommandError):
    """An ack or result for a command still pending: the agent never received it."""


class AlreadyFinal(CommandError):
    """The command already ended; nothing changes it any more."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


class OtherOutcome(AlreadyFinal):
    """A result for a command that already ended with a different outcome."""


class OutOfScope(CommandError):
    """The operator's scope does not reach this agent or this command type (403)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- pure decisions ---------------------------------------------------------------------


@dataclass(frozen=True)
class PollPolicy:
    """When an agent should poll next: rapidly while it has work in flight or received a
    command within the rapid window, at the standard interval otherwise."""

    standard_s: int
    rapid_s: int
    rapid_window_s: int

    def interval_s(self, claimed: bool, in_flight: bool | None,
                   last_sent_at: datetime | None, now: datetime) -> int:
        recent = last_sent_at is not None and now - last_sent_at < timedelta(seconds=self.rapid_window_s)
        return self.rapid_s if (claimed or in_flight or recent) else self.standard_s


def check_agent(agent_status: str | None) -> None:
    """The calling agent as a statement saw it: gone, revoked, or active."""
    if agent_status is None:
        raise UnknownAgent()
    if agent_status != "active":
        raise AgentRevoked()


def _found(found: Row | None) -> Row:
    """What an agent's ack or result statement found: its agent, then its command."""
    check_agent(found["agent_status"] if found is not None else None)
    assert found is not None
    if found["id"] is None:
        raise CommandNotFound()
    return found


def ack_outcome(found: Row | None) -> dict:
    """The command after an ack. sent -> running happened, or the ack was a repeat or came
    too late: a running command answers `running`, a final one its final status (the agent
    must not run it); a pending one was never delivered."""
    row = _found(found)
    view = dict(row)
    if row["new_status"] is not None:
        view.update(status=row["new_status"], acked_at=row["new_acked_at"],
                    finished_at=row["new_finished_at"])
    elif row["status"] == "pending":
        raise NotDelivered()
    return view


def result_outcome(found: Row | None, outcome: str, result: Mapping,
                   cancelled: bool = False) -> tuple[dict, bool]:
    """The command after a result, and whether this result ended it. The same outcome
    again is a no-op (for a cancelled command: a result that says a cancel ended it); a
    final command refuses anything else and changes nothing."""
    row = _found(found)
    if row["new_status"] is not None:
        view = dict(row)
        view.update(status=row["new_status"], finished_at=row["new_finished_at"],
                    result=row["new_result"])
        return view, True
    status = row["status"]
    if status == "pending":
        raise NotDelivered()
    if status == "cancelled" and cancelled and row["cancel_requested_at"] is not None:
        return dict(row), False
    if status in OUTCOMES:
        same = status == outcome and (row["result"] or {}).get("exit_code") == result.get("exit_code")
        if same:
            return dict(row), False
        raise OtherOutcome(status)
    raise AlreadyFinal(status)


def create_outcome(row: Row | None) -> Row | None:
    """The new command, or None when the idempotency key already names one."""
    if row is None:
        raise NoSuchTarget()
    if not row["in_scope"]:
        raise OutOfScope("This agent is outside the operator's scope.")
    if row["agent_status"] != "active":
        raise TargetRevoked()
    return row if row["id"] is not None else None


def check_type(scope: Scope, command_type: str) -> None:
    if not scope.allows_type(command_type):
        raise OutOfScope(f"The command type {command_type!r} is outside the operator's scope.")


def params_digest(params: dict) -> str:
    """What the audit trail keeps of a command's params: proof of what ran, not its values
    (params may carry secrets; the command itself shows them while it is kept)."""
    return hashlib.sha256(canonical(params)).hexdigest()


async def sweep(step: Callable[[int], Awaitable[int]], batch: int) -> int:
    """Repeat one reaper step while it fills whole batches; returns how many rows moved."""
    total = 0
    while True:
        moved = await step(batch)
        total += moved
        if moved < batch:
            return total


def updated_rows(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # asyncpg's "UPDATE 17" -> 17


# --- operations: one statement each (create also wakes the agent's polls) -----------------


@dataclass(frozen=True)
class NewCommand:
    agent_id: uuid.UUID | None  # None for a job's settings: each target is its own
    type: str
    params: dict
    priority: int
    ttl_s: int
    max_retries: int
    ack_timeout_s: int
    run_timeout_s: int
    idempotency_key: str | None

    @classmethod
    def of_row(cls, row: Row) -> "NewCommand":
        """A stored command's settings (one awaiting approval is signed from them)."""
        return cls(**{f: row[f] for f in ("agent_id", "type", "params", "priority", "ttl_s", "max_retries",
                                          "ack_timeout_s", "run_timeout_s", "idempotency_key")})


@dataclass(frozen=True)
class Claim:
    commands: list[Row]
    poll_interval_s: int
    cancels: list[dict] = field(default_factory=list)  # [{"command_id", "signed"}] handed over now
    refresh_facts: bool = False  # an operator asked for fresh facts, newer than the last report

    @property
    def answers(self) -> bool:
        """Whether a held poll has something to answer with."""
        return bool(self.commands or self.cancels or self.refresh_facts)


async def claim(db: Db, agent_id: uuid.UUID, limit: int, policy: PollPolicy) -> Claim:
    rows = await db.fetch(q.CLAIM, agent_id, limit)
    check_agent(rows[0]["agent_status"] if rows else None)
    claimed = [r for r in rows if r["id"] is not None]
    head = rows[0]
    interval = policy.interval_s(bool(claimed), head["in_flight"], head["last_sent_at"], head["now"])
    return Claim(claimed, interval, [{"command_id": str(c["command_id"]), "signed": c["signed"]}
                                     for c in head["cancels"]], head["refresh_facts"])


async def ack(db: Db, agent_id: uuid.UUID, command_id: uuid.UUID) -> dict:
    command = ack_outcome(await db.fetchrow(q.ACK, agent_id, command_id))
    if command["new_status"] is None and command["status"] in ("sent", "running"):
        # The guard found the command live in the statement's snapshot yet matched nothing:
        # something ended it meanwhile (the reaper, a cancel). Answer what it is now.
        command = dict(await get(db, command_id))
    return command


async def report(db: Db, agent_id: uuid.UUID, command_id: uuid.UUID, outcome: str,
                 result: dict, cancelled: bool = False) -> tuple[dict, bool]:
    """`cancelled`: the agent stopped it for a cancel it verified (it ends `cancelled` when
    one was asked for)."""
    row = await db.fetchrow(q.REPORT_RESULT, agent_id, command_id, outcome, result, cancelled)
    return result_outcome(row, outcome, result, cancelled)


async def create(db: Db, new: NewCommand, signer: CommandSigner, by: Operator,
                 ctx: audit.Context, policy: Policy = NO_POLICY) -> tuple[Row, bool]:
    """The command, signed now (its payload names who issued it), and whether it was created
    now (False: the idempotency key's twin, which keeps its own signature). Created, its
    audit event and the agent's wake-up commit together. One the approval policy catches is
    created `awaiting_approval` instead: unsigned, not claimable, no wake-up; its
    expires_at is the approval deadline until approved (approvals.py)."""
    check_type(by.scope, new.type)
    agent_id = new.agent_id
    assert agent_id is not None  # a single command names its agent
    command_id = uuid.uuid4()
    issued_at = datetime.now(timezone.utc)
    required = await issuing.approvals_needed(db, policy, new.type, [agent_id])
    if required:
        status, signed = statuses.AWAITING, None
        expires_at = issued_at + timedelta(seconds=policy.expires_in_s)
    else:
        status, expires_at = "pending", issued_at + timedelta(seconds=new.ttl_s)
        (signed,) = await issuing.signed_payloads(db, signer, [command_id], [agent_id], new, issued_at, expires_at,
                                                  by.name)
    async with db.transaction():
        row = create_outcome(await db.fetchrow(
            q.CREATE_COMMAND, new.agent_id, command_id, new.type, new.params, new.priority,
            new.max_retries, new.ack_timeout_s, new.run_timeout_s, new.idempotency_key, issued_at,
            expires_at, signed, by.scope.labels, by.id, by.name, status, required, new.ttl_s,
        ))
        if row is None:
            return await db.fetchrow(q.GET_BY_IDEMPOTENCY_KEY, new.agent_id, new.idempotency_key), False
        await audit.record(db, ctx, "command.create", "command", command_id, details={
            "agent_id": str(new.agent_id), "type": new.type, "params_sha256": params_digest(new.params),
            "priority": new.priority, "ttl_s": new.ttl_s, "idempotency_key": new.idempotency_key,
            "approvals_required": required})
        if not required:
            await db.execute(q.NOTIFY_NEW_COMMAND, str(new.agent_id))
    return row, True


async def get(db: Db, command_id: uuid.UUID, scope: Scope = EVERYTHING) -> Row:
    """The command, if the scope reaches its agent (else, for this operator, there is none)."""
    if scope.labels:
        row = await db.fetchrow(q.GET_COMMAND_IN_SCOPE, command_id, scope.labels)
    else:
        row = await db.fetchrow(q.GET_COMMAND, command_id)
    if row is None:
        raise CommandNotFound()
    return row


async def page(db: Db, before: tuple, limit: int, agent_id: uuid.UUID | None = None,
               status: str | None = None, scope: Scope = EVERYTHING) -> list[Row]:
    """Newest first, after the `before` cursor, within the scope; limit + 1 rows, so the
    caller can tell whether there is a next page."""
    scoped = bool(scope.labels)
    sql = q.LIST_COMMANDS[(agent_id is not None, status is not None, scoped)]
    filters = [v for v in (agent_id, status) if v is not None] + ([scope.labels] if scoped else [])
    return await db.fetch(sql, *before, limit + 1, *filters)


def cancel_signature(signer: CommandSigner, command_id: uuid.UUID, agent_id: uuid.UUID, by: Operator,
                     at: datetime) -> dict:
    return signer.sign_cancel(command_id=str(command_id), agent_id=str(agent_id), issued_by=by.name, iat=at)


async def cancel(db: Db, command_id: uuid.UUID, signer: CommandSigner, by: Operator,
                 ctx: audit.Context) -> Row:
    """A command not running yet ends `cancelled` now; a running one stays running with its
    cancel asked for (`cancel_requested_at`), and its agent's held polls wake to hand it
    the signed cancel. The same cancel again changes nothing."""
    async with db.transaction():
        current = await get(db, command_id, by.scope)
        check_type(by.scope, current["type"])  # stopping a type it may not run is not its to do
        # Signed whatever it is now: an ack may make it running before the statement runs.
        signed = cancel_signature(signer, command_id, current["agent_id"], by, datetime.now(timezone.utc))
        row = await db.fetchrow(q.CANCEL_COMMAND, command_id, by.id, by.name, signed)
        if row is None:
            raise AlreadyFinal((await get(db, command_id))["status"])
        await audit.record(db, ctx, "command.cancel", "command", command_id,
                           details={"agent_id": str(row["agent_id"]), "was": current["status"]})
        if row["status"] == "running":
            await db.execute(q.NOTIFY_AGENT, str(row["agent_id"]))
    return row


async def cancel_revoked(db: Db, agent_id: uuid.UUID) -> set[uuid.UUID]:
    """A revoked agent's job commands not delivered yet -> cancelled; the jobs they were in."""
    return {r["job_id"] for r in await db.fetch(q.CANCEL_REVOKED_AGENT_JOB_COMMANDS, agent_id)}


REAPER_SWEEPS = (
    ("exhausted_leases", q.REAP_EXHAUSTED_LEASES),
    ("overdue_runs", q.REAP_OVERDUE_RUNS),
    ("expired", q.REAP_EXPIRED),
    ("revoked_agents", q.REAP_REVOKED_AGENTS_JOB_COMMANDS),
)


async def reap(db: Db, batch: int = 1000) -> dict[str, int]:
    """The reaper's moves, one full pass: exhausted leases and overdue runs -> timed_out,
    past-expiry commands -> expired, undelivered job commands of agents revoked lately ->
    cancelled (what a missed notification left)."""
    moved = {}
    for name, sql in REAPER_SWEEPS:
        async def step(n: int, sql: str = sql) -> int:
            return updated_rows(await db.execute(sql, n))
        moved[name] = await sweep(step, batch)
    return moved
