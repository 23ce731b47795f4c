"""The audit trail's one writer. A change records its event with `record()` inside its own
transaction (`async with db.transaction(): ... await record(db, ...)`), so no change
commits without its event and a change that fails leaves none. Refusals (403), sign-ins
and agents' security events are recorded on their own (`record()` outside a transaction).
`details` holds the request's meaningful fields, never a secret."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from services.common import queries as q
from services.common.db import Db

BOOTSTRAP_ID = uuid.UUID(int=0)


@dataclass(frozen=True)
class Actor:
    type: str  # "operator", "bootstrap" or "agent"
    id: uuid.UUID | None
    name: str

    def ref(self) -> dict:
        """How commands and jobs name who created or cancelled them."""
        return {"id": str(self.id) if self.id else None, "name": self.name}


@dataclass(frozen=True)
class Context:
    """Who asks, from where, in which request: every event of a request carries them."""
    actor: Actor
    request_id: str | None = None
    source_ip: str | None = None


def agent_actor(agent_id: uuid.UUID) -> Actor:
    return Actor("agent", agent_id, str(agent_id))


async def record(db: Db, ctx: Context, action: str, target_type: str | None = None,
                 target_id: Any = None, outcome: str = "ok", details: dict | None = None) -> None:
    await db.execute(q.INSERT_AUDIT_EVENT, uuid.uuid4(), ctx.actor.type, ctx.actor.id, ctx.actor.name, action,
                     target_type, str(target_id) if target_id is not None else None, outcome,
                     ctx.request_id, ctx.source_ip, details or {})
