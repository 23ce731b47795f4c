"""Auth's own retention: every FLEETLINE_PRUNE_INTERVAL_S it deletes, in batches, rows of
its tables whose time is over: single sign-on nonces past their expiry (used ones are gone
already). Each batch picks its rows SKIP LOCKED, so replicas never wait on each other."""

from __future__ import annotations

from services.auth import queries as q
from services.common.db import Db
from services.common.periodic import Periodic

BATCH = 1000


class AuthPruner(Periodic):
    def __init__(self, db: Db, interval_s: float, batch: int = BATCH):
        self.db, self.batch = db, batch
        self.pruned: dict[str, int] = {}
        super().__init__("pruner", interval_s, self.prune, first_after_s=interval_s, component="auth")

    async def prune(self) -> dict[str, int]:
        deleted = {"oidc_nonces": await self._drain(q.PRUNE_OIDC_NONCES)}
        for table, n in deleted.items():
            self.pruned[table] = self.pruned.get(table, 0) + n
        return deleted

    async def _drain(self, sql: str) -> int:
        total = 0
        while True:
            n = await self.db.fetchval(sql, self.batch)
            total += n
            if n < self.batch:
                return total
