"""Enrolment: how an agent gets in and stays in. Registration and renewal are each one
transaction (queries.py says why each lock and guard is there); the handlers in
agents_api.py parse, call one operation and render; api_errors.py answers each refusal.

Registration:
    token unknown, revoked or expired                      -> TokenRefused (401)
    machine held by an active agent that used its
      credentials, or registered with another token        -> MachineEnrolled (409, a security event)
    machine held by this token's agent, credentials
      never used                                           -> the same agent again: a retry after
                                                              a lost answer (no use consumed, its
                                                              earlier refresh tokens revoked)
    new machine, token has a use left                      -> a new agent
    new machine, token used up                             -> TokenRefused (401)

Renewal: rotation.py decides from the facts read under the family's lock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable

import asyncpg

from fleetline.ethos import Log
from services.auth import queries as q
from services.auth.rotation import REUSE_REASON, Renewal, decide
from services.auth.secrets import REFRESH_PREFIX, digest, new_secret
from services.common import audit
from services.common.db import Db

_log = Log("auth", "enrolment")


# --- what can go wrong ---------------------------------------------------------------


class EnrolmentError(Exception):
    """A registration or renewal refused; api_errors.py says how each is answered."""


class TokenRefused(EnrolmentError):
    """The registration or refresh token does not let this caller in (`detail` says why)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class MachineEnrolled(EnrolmentError):
    """The machine belongs to an active agent that may not be replaced by registering again."""

    def __init__(self, agent_id: uuid.UUID, reason: str):
        super().__init__(reason)
        self.agent_id, self.reason = agent_id, reason


class TokenReused(EnrolmentError):
    """A rotated-out refresh token came back: its family is revoked (committed)."""


class AgentRevoked(EnrolmentError):
    pass


class MachineMismatch(EnrolmentError):
    pass


class NoSuchAgent(EnrolmentError):
    pass


# Why a registration for an enrolled machine is refused.
CREDENTIALS_USED = "credentials_used"  # the agent has renewed or called dispatch since
OTHER_TOKEN = "other_token"  # the agent was registered with another registration token


@dataclass(frozen=True)
class Registration:
    token: str
    machine_id: str
    hostname: str
    os: str = ""
    arch: str = ""
    agent_version: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Credentials:
    agent_id: uuid.UUID
    refresh_token: str
    refresh_token_expires_at: datetime


# --- registration ----------------------------------------------------------------------


def repeat_outcome(existing: Any, token_id: uuid.UUID) -> str | None:
    """Pure: why a registration for a machine that `existing` (an active agent) holds is
    refused, or None when it is a retry after a lost answer."""
    if existing["registration_token_id"] != token_id:
        return OTHER_TOKEN
    if existing["credentials_used_at"] is not None:
        return CREDENTIALS_USED
    return None


def _as_agent(origin: audit.Context, agent_id: uuid.UUID) -> audit.Context:
    """An agent's security event: the agent is the actor, with the request's id and address."""
    return audit.Context(audit.agent_actor(agent_id), origin.request_id, origin.source_ip)


async def register(db: Db, new: Registration, refresh_ttl_s: int, origin: audit.Context) -> tuple[Credentials, bool]:
    """The agent's credentials, and whether this was a retry of an earlier registration.
    `origin`: the request's id and address (a refusal is an audit event of the agent)."""
    refresh_token = new_secret(REFRESH_PREFIX)
    try:
        async with db.transaction():
            token = await db.fetchrow(q.LOCK_REGISTRATION_TOKEN, digest(new.token))
            if token is None:
                raise TokenRefused("The registration token is unknown, expired or revoked.")
            existing = await db.fetchrow(q.ACTIVE_AGENT_FOR_MACHINE, new.machine_id)
            if existing is not None:
                refused = repeat_outcome(existing, token["id"])
                if refused is not None:
                    raise MachineEnrolled(existing["id"], refused)
                agent_id = existing["id"]
                await db.execute(q.REVOKE_AGENT_REFRESH_TOKENS, agent_id, "registered_again")
            else:
                if await db.fetchval(q.CONSUME_TOKEN_USE, token["id"]) is None:
                    raise TokenRefused("The registration token has no use left.")
                agent_id = uuid.uuid4()
                await db.execute(q.INSERT_AGENT, agent_id, new.machine_id, token["id"], new.hostname,
                                 new.os, new.arch, new.agent_version, new.labels)
            family_id = uuid.uuid4()  # each registration starts a family of refresh tokens
            await db.execute(q.INSERT_FAMILY, family_id, agent_id, refresh_ttl_s)
            expires = await db.fetchval(q.INSERT_REFRESH_TOKEN, uuid.uuid4(), family_id,
                                        digest(refresh_token))
    except MachineEnrolled as exc:
        # Changes nothing; whoever asked may be trying to take the machine over.
        _log.warning("registration_refused", agent_id=exc.agent_id, reason=exc.reason,
                     token_id=token["id"], client=origin.source_ip, security_event=True)
        await audit.record(db, _as_agent(origin, exc.agent_id), "agent.register_refused", "agent", exc.agent_id,
                           outcome="forbidden", details={"reason": exc.reason, "token_id": str(token["id"]),
                                                         "hostname": new.hostname})
        raise
    except asyncpg.UniqueViolationError:
        # Two registrations with different tokens raced for one new machine; this one lost.
        raise MachineEnrolled(uuid.UUID(int=0), OTHER_TOKEN) from None
    retry = existing is not None
    _log.info("agent_registered", agent_id=agent_id, token_id=token["id"], repeat=retry)
    return Credentials(agent_id, refresh_token, expires), retry


# --- renewal ---------------------------------------------------------------------------


async def renew(db: Db, agent_id: uuid.UUID, presented: str, machine_id: str, refresh_ttl_s: int,
                origin: audit.Context, admit: Callable[[], Awaitable[object]] | None = None
                ) -> tuple[Credentials, bool]:
    """The successor of the presented refresh token (it is consumed), and whether this was
    a grace renewal (the agent lost the previous answer). `admit` is awaited once the token
    is known to be this agent's, before anything is written (the agent's renewal limit:
    someone else's made-up tokens never spend it)."""
    successor = new_secret(REFRESH_PREFIX)
    found = await db.fetchrow(q.FIND_REFRESH_TOKEN, digest(presented))
    if found is None or found["agent_id"] != agent_id:
        raise TokenRefused("The refresh token is unknown or belongs to another agent.")
    if admit is not None:
        await admit()
    async with db.transaction():
        if found["agent_status"] != "active":
            raise AgentRevoked()
        if found["machine_id"] != machine_id:
            raise MachineMismatch()
        await db.execute(q.MARK_RENEWAL_USE, agent_id)
        family = await db.fetchrow(q.LOCK_FAMILY, found["family_id"])
        if family["revoked_at"] is not None:
            if family["revoked_reason"] == REUSE_REASON:
                raise TokenReused()
            raise TokenRefused("The refresh token was revoked.")
        if not family["live"]:
            raise TokenRefused("The refresh token has expired.")
        token_state = await db.fetchrow(q.TOKEN_STATE, found["id"])
        decision = decide(token_state)
        if decision is Renewal.REFUSE:
            raise TokenRefused("The refresh token was revoked.")
        if decision is Renewal.REUSE:
            # Committed, not rolled back: the family stays dead whatever the caller does.
            await db.execute(q.REVOKE_FAMILY, found["family_id"], REUSE_REASON)
            await audit.record(db, _as_agent(origin, agent_id), "agent.refresh_token_reused", "agent", agent_id,
                               outcome="forbidden", details={"family_id": str(found["family_id"]),
                                                             "action": "family_revoked"})
        else:
            if decision is Renewal.GRACE:
                await db.execute(q.RETIRE_UNUSED_SUCCESSOR, token_state["superseded_by"])
            expires = await db.fetchval(q.ISSUE_SUCCESSOR, found["id"], found["family_id"], uuid.uuid4(),
                                        refresh_ttl_s, digest(successor))
    if decision is Renewal.REUSE:
        _log.warning("refresh_token_reused", agent_id=agent_id, family_id=found["family_id"],
                     action="family_revoked", security_event=True)
        raise TokenReused()
    _log.info("token_renewed", agent_id=agent_id, grace=decision is Renewal.GRACE)
    return Credentials(agent_id, successor, expires), decision is Renewal.GRACE


# --- revocation ------------------------------------------------------------------------


async def revoke(db: Db, ctx: audit.Context, agent_id: uuid.UUID) -> None:
    """The agent and every refresh token of it, in one transaction (again: no change). Its
    commands are dispatch's: the notification tells dispatch to end the undelivered ones of
    its jobs and to answer its held poll `403 agent_revoked` at once."""
    async with db.transaction():
        if await db.fetchval(q.REVOKE_AGENT, agent_id) is None:
            raise NoSuchAgent()
        await db.execute(q.REVOKE_AGENT_REFRESH_TOKENS, agent_id, "agent_revoked")
        await audit.record(db, ctx, "agent.revoke", "agent", agent_id)
        await db.execute(q.NOTIFY_REVOKED, str(agent_id))
    _log.info("agent_revoked", agent_id=agent_id)


async def current_keyset(db: Db) -> dict | None:
    """The newest command keyset, for agents that pin the root key at registration."""
    return await db.fetchval(q.CURRENT_KEYSET)
