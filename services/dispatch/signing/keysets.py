"""The keysets agents trust, kept in the database (they are public and signed by the root
key, so whoever writes the database can at most replay an older one, which agents refuse
for its version)."""

from __future__ import annotations

import uuid

from services.common import audit
from services.common.db import Db
from services.dispatch.lifecycle.commands import check_agent
from services.dispatch.signing import queries as q
from services.dispatch.signing.signer import Keyset


async def install(db: Db, keyset: Keyset, ctx: audit.Context | None = None) -> bool:
    """True when installed; False when its version is not above the current one. An
    operator's upload (`ctx`) is recorded with it; the start-up file's is not a request."""
    async with db.transaction():
        installed = await db.fetchval(q.INSTALL_KEYSET, keyset.version, keyset.document,
                                      keyset.expires_at) is not None
        if installed and ctx is not None:
            await audit.record(db, ctx, "keyset.install", "keyset", keyset.version,
                               details={"version": keyset.version, "kids": sorted(keyset.kids)})
    return installed


async def for_agent(db: Db, agent_id: uuid.UUID) -> dict | None:
    """The newest keyset, for an agent that is active (AgentRevoked, UnknownAgent otherwise)."""
    row = await db.fetchrow(q.KEYSET_FOR_AGENT, agent_id)
    check_agent(row["agent_status"] if row is not None else None)
    return row["document"]
