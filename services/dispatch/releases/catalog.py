"""What the other rooms ask of releases (the admin endpoints, before an upgrade is made)."""

from __future__ import annotations

from services.common.db import Db
from services.dispatch.releases import queries as q


async def has_version(db: Db, version: str) -> bool:
    """Whether a release of this version was uploaded, for any platform."""
    return bool(await db.fetchval(q.RELEASE_EXISTS, version))
