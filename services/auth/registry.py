"""What operators do with the enrolment's records: registration tokens (create, list,
revoke) and agents (list, page, get). Revocation of an agent is enrolment's (it ends its
credentials). Each operation runs its named statements (queries.py) and raises the
refusals below; admin_api.py parses, calls one and renders (views.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from fleetline.ethos import Log
from services.auth import queries as q
from services.auth.enrolment import NoSuchAgent
from services.auth.secrets import REGISTRATION_PREFIX, digest, new_secret
from services.common import audit
from services.common.db import Db
from services.common.operators import Scope
from services.common.where import Requirement, compile_requirements

_log = Log("auth", "admin")


class RegistryError(Exception):
    pass


class NoSuchToken(RegistryError):
    pass


async def create_token(db: Db, ctx: audit.Context, max_uses: int, expires_in_s: int,
                       note: str) -> tuple[dict, str]:
    """The token's row and its secret (shown once; only its digest is stored)."""
    secret = new_secret(REGISTRATION_PREFIX)
    async with db.transaction():
        row = await db.fetchrow(q.INSERT_REGISTRATION_TOKEN, uuid.uuid4(), digest(secret), max_uses, note,
                                expires_in_s)
        await audit.record(db, ctx, "registration_token.create", "registration_token", row["id"],
                           details={"max_uses": max_uses, "expires_in_s": expires_in_s, "note": note})
    _log.info("registration_token_created", token_id=row["id"], max_uses=max_uses)
    return row, secret


async def list_tokens(db: Db) -> list:
    return await db.fetch(q.LIST_REGISTRATION_TOKENS)


async def revoke_token(db: Db, ctx: audit.Context, token_id: uuid.UUID) -> None:
    """Idempotent: a token revoked twice keeps its first revocation time."""
    async with db.transaction():
        if await db.fetchval(q.REVOKE_REGISTRATION_TOKEN, token_id) is None:
            raise NoSuchToken()
        await audit.record(db, ctx, "registration_token.revoke", "registration_token", token_id)
    _log.info("registration_token_revoked", token_id=token_id)


@dataclass(frozen=True)
class AgentFilter:
    status: str | None = None
    labels: dict | None = None  # every pair must match
    where: list[Requirement] | None = None  # a `where` expression, parsed


async def all_agents(db: Db, scope: Scope) -> list:
    """Every agent within the operator's scope."""
    return await db.fetch(q.LIST_AGENTS, scope.labels)


async def agent_page(db: Db, scope: Scope, before: tuple[datetime, uuid.UUID], limit: int,
                     where: AgentFilter) -> list:
    """Newest first after the cursor, within the scope; limit + 1 rows (the caller tells a
    next page)."""
    if where.where:
        predicate, args = compile_requirements(where.where, 7)
        return await db.fetch(q.list_agents_page_where(predicate), *before, limit + 1, scope.labels, where.status,
                              where.labels or {}, *args)
    if where.labels:
        return await db.fetch(q.LIST_AGENTS_PAGE_BY_LABELS, *before, limit + 1, scope.labels, where.status,
                              where.labels)
    if where.status is None:
        return await db.fetch(q.LIST_AGENTS_PAGE, *before, limit + 1, scope.labels)
    return await db.fetch(q.LIST_AGENTS_PAGE_BY_STATUS, *before, limit + 1, scope.labels, where.status)


class ScopeLabel(RegistryError):
    """A scoped operator may not set or remove a label its own scope names."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


async def set_operator_labels(db: Db, ctx: audit.Context, scope: Scope, agent_id: uuid.UUID,
                              changes: dict[str, str | None]):
    """Operator labels set (a value) or removed (None), with the audit event, in one
    transaction. Never a label the operator's own scope names: it would move agents into or
    out of someone's scope."""
    for name in changes:
        if name in scope.labels:
            raise ScopeLabel(name)
    setting = {k: v for k, v in changes.items() if v is not None}
    removing = sorted(k for k, v in changes.items() if v is None)
    async with db.transaction():
        row = await db.fetchrow(q.SET_OPERATOR_LABELS, agent_id, setting, removing, scope.labels)
        if row is None:
            raise NoSuchAgent()
        await audit.record(db, ctx, "agent.label", "agent", agent_id, details={"set": setting, "removed": removing})
    _log.info("agent_labelled", agent_id=agent_id, set=len(setting), removed=len(removing))
    return row


async def request_facts(db: Db, ctx: audit.Context, scope: Scope, agent_id: uuid.UUID) -> None:
    """An active agent within the scope is asked for its facts at once (its held poll wakes)."""
    async with db.transaction():
        if await db.fetchval(q.REQUEST_FACTS, agent_id, scope.labels) is None:
            raise NoSuchAgent()
        await db.execute(q.NOTIFY_AGENT, str(agent_id))
        await audit.record(db, ctx, "agent.refresh_facts", "agent", agent_id)


async def get_agent(db: Db, scope: Scope, agent_id: uuid.UUID):
    """The agent, if the scope reaches it (else, to this operator, there is no such agent)."""
    row = await db.fetchrow(q.GET_AGENT, agent_id, scope.labels)
    if row is None:
        raise NoSuchAgent()
    return row


@dataclass(frozen=True)
class AuditFilter:
    actor_id: uuid.UUID | None = None
    actor_name: str | None = None
    action: str | None = None
    target_id: str | None = None
    since: datetime | None = None


async def audit_page(db: Db, before: tuple[datetime, uuid.UUID], limit: int, where: AuditFilter) -> list:
    """The trail, newest first after the cursor; limit + 1 rows."""
    return await db.fetch(q.LIST_AUDIT, *before, limit + 1, where.actor_id, where.actor_name, where.action,
                          where.target_id, where.since)
