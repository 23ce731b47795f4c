"""Readiness: a service is ready only when its database answers *with the schema this code
expects*; an installed copy that was never migrated is not ready, it does not serve 500s."""

from __future__ import annotations

from fleetline.schema import expected_versions
from services.common.db import Db

# yoyo records each applied migration here; all of ours must be there. A database that
# was never migrated has no such table: not ready either.
APPLIED_OF = """
SELECT count(*) FROM _yoyo_migration WHERE migration_id = ANY($1::text[])
"""


class SchemaCheck:
    def __init__(self, db: Db):
        self.db = db
        self.expected = expected_versions()

    async def __call__(self) -> bool:
        try:
            return await self.db.fetchval(APPLIED_OF, self.expected) == len(self.expected)
        except Exception:  # no database, no table, a dropped connection: not ready, whatever it is
            return False
