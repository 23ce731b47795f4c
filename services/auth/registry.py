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
from services.common.db import Db

_log = Log("auth", "admin")


class RegistryError(Exception):
    pass


class NoSuchToken(RegistryError):
    pass


async def create_token(db: Db, max_uses: int, expires_in_s: int, note: str) -> tuple[dict, str]:
    """The token's row and its secret (shown once; only its digest is stored)."""
    secret = new_secret(REGISTRATION_PREFIX)
    row = await db.fetchrow(q.INSERT_REGISTRATION_TOKEN, uuid.uuid4(), digest(secret), max_uses, note,
                            expires_in_s)
    _log.info("registration_token_created", token_id=row["id"], max_uses=max_uses)
    return row, secret


async def list_tokens(db: Db) -> list:
    return await db.fetch(q.LIST_REGISTRATION_TOKENS)


async def revoke_token(db: Db, token_id: uuid.UUID) -> None:
    """Idempotent: a token revoked twice keeps its first revocation time."""
    if await db.fetchval(q.REVOKE_REGISTRATION_TOKEN, token_id) is None:
        raise NoSuchToken()
    _log.info("registration_token_revoked", token_id=token_id)


@dataclass(frozen=True)
class AgentFilter:
    status: str | None = None
    labels: dict | None = None  # every pair must match


async def all_agents(db: Db) -> list:
    return await db.fetch(q.LIST_AGENTS)


async def agent_page(db: Db, before: tuple[datetime, uuid.UUID], limit: int, where: AgentFilter) -> list:
    """Newest first after the cursor; limit + 1 rows (the caller tells a next page)."""
    if where.labels:
        return await db.fetch(q.LIST_AGENTS_PAGE_BY_LABELS, *before, limit + 1, where.status, where.labels)
    if where.status is None:
        return await db.fetch(q.LIST_AGENTS_PAGE, *before, limit + 1)
    return await db.fetch(q.LIST_AGENTS_PAGE_BY_STATUS, *before, limit + 1, where.status)


async def get_agent(db: Db, agent_id: uuid.UUID):
    row = await db.fetchrow(q.GET_AGENT, agent_id)
    if row is None:
        raise NoSuchAgent()
    return row
