"""Auth's own retention (each table has one owner: dispatch prunes its own): every
FLEETLINE_PRUNE_INTERVAL_S it deletes, in batches, rows of its tables whose time is over:
console sessions past their end, operator tokens that expired more than
FLEETLINE_RETENTION_DAYS ago (kept that long so the console still shows a recently expired
one), single sign-on nonces past their expiry (used ones are gone already). A batch that
races another replica's deletes nothing twice: the rows are gone, or the DELETE finds none."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

from services.auth import queries as q
from services.common.db import Db
from services.common.periodic import Periodic

BATCH = 1000


class AuthPruner(Periodic):
    def __init__(self, db: Db, interval_s: float, retention_days: float, batch: int = BATCH,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.db, self.batch, self.clock = db, batch, clock
        self.retention = timedelta(days=retention_days)
        self.pruned: dict[str, int] = {}
        super().__init__("pruner", interval_s, self.prune, first_after_s=interval_s, component="auth")

    async def prune(self) -> dict[str, int]:
        horizon = self.clock() - self.retention
        deleted = {"operator_sessions": await self._drain(q.PRUNE_SESSIONS),
                   "operator_tokens": await self._drain(q.PRUNE_OPERATOR_TOKENS, horizon),
                   "oidc_nonces": await self._drain(q.PRUNE_OIDC_NONCES)}
        for table, n in deleted.items():
            self.pruned[table] = self.pruned.get(table, 0) + n
        return deleted

    async def _drain(self, sql: str, *before: datetime) -> int:
        total = 0
        while True:
            n = await self.db.fetchval(sql, *before, self.batch)
            total += n
            if n < self.batch:
                return total
