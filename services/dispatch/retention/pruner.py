"""Retention: the pruner, in dispatch's periodic loop, keeps the history at its horizon.

Every FLEETLINE_PRUNE_INTERVAL_S one replica at a time (a session advisory lock on its own
connection, released when the pass ends or the process dies) deletes, oldest first, in
batches of at most BATCH rows with a pause between them:
  single commands ended before the horizon (FLEETLINE_RETENTION_DAYS), with their
  delivery ledger and output; the commands of jobs ended before it, then the jobs once
  empty; audit events past the audit horizon, through the schema owner's function, which
  reads the horizon from a table only `fleetline migrate` writes (the services' role may
  not delete an event itself). Auth prunes its own tables (services/auth/pruner.py).
Each batch is its own short transaction on rows picked FOR UPDATE SKIP LOCKED
(queries.py): nothing a poll or a claim does waits on it. The pass ends a table when a
batch comes back short, so the work per pass is bounded by what is due."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Callable

import asyncpg

from fleetline.ethos import Log
from services.common.periodic import Periodic
from services.dispatch.retention import queries as q

BATCH = 1000
PAUSE_S = 0.05  # between batches: a pruning pass yields the database to the hot path
_log = Log("dispatch", "pruner")


class Pruner(Periodic):
    def __init__(self, dsn: str, server_settings: dict, interval_s: float, retention_days: float,
                 batch: int = BATCH, pause_s: float = PAUSE_S,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 counted: Callable[[str, int], None] = lambda table, n: None):
        self.dsn, self.server_settings = dsn, server_settings
        self.retention = timedelta(days=retention_days)
        self.batch, self.pause_s, self.clock, self.counted = batch, pause_s, clock, counted
        self.pruned: dict[str, int] = {}  # rows deleted since start, by table
        self.oldest: dict[str, datetime | None] = {}  # the oldest row kept, by table
        self.passes = 0  # passes this replica ran (not counting those another replica held)
        super().__init__("pruner", interval_s, self.prune)

    async def prune(self) -> dict[str, int] | None:
        """One pass; what it deleted by table, or None when another replica is pruning."""
        conn = await asyncpg.connect(self.dsn, timeout=10, server_settings=self.server_settings)
        try:
            if not await conn.fetchval(q.PRUNE_LOCK):
                return None
            self.passes += 1
            now = self.clock()
            horizon = now - self.retention
            deleted = {
                "commands": await self._drain(conn, q.PRUNE_COMMANDS, horizon, keyset=True),
                "job_commands": await self._drain(conn, q.PRUNE_JOB_COMMANDS, horizon),
                "jobs": await self._drain(conn, q.PRUNE_JOBS, horizon),
                "schedule_runs": await self._drain(conn, q.PRUNE_SCHEDULE_RUNS, horizon),
                "webhook_deliveries": await self._drain(conn, q.PRUNE_WEBHOOK_DELIVERIES, horizon),
                "audit_events": await self._drain(conn, q.PRUNE_AUDIT, keyset=True),
            }
            oldest = await conn.fetchrow(q.OLDEST_KEPT)
            self.oldest = dict(oldest)
            audit_horizon = await conn.fetchval(q.AUDIT_HORIZON)
        finally:
            await conn.close(timeout=5)  # the lock goes with the session
        for table, n in deleted.items():
            self.pruned[table] = self.pruned.get(table, 0) + n
            self.counted(table, n)
        if any(deleted.values()):
            _log.info("pruned", horizon=horizon.isoformat(), audit_horizon=audit_horizon.isoformat(), **deleted)
        return deleted

    async def _drain(self, conn: asyncpg.Connection, sql: str, horizon: datetime | None = None,
                     keyset: bool = False) -> int:
        """Batches until one comes back short. `keyset`: the statement takes where the last
        batch ended and answers where this one did (queries.PRUNE_COMMANDS says why)."""
        args = (horizon, self.batch) if horizon is not None else (self.batch,)
        reached = datetime.min.replace(tzinfo=timezone.utc)
        total = 0
        while True:
            async with conn.transaction():
                if keyset:
                    row = await conn.fetchrow(sql, *args, reached)
                    n, reached = row["deleted"], row["reached"] or reached
                else:
                    n = await conn.fetchval(sql, *args)
            total += n
            if n < self.batch:
                return total
            await asyncio.sleep(self.pause_s)

    def oldest_age_s(self, table: str) -> float:
        """Seconds since the oldest row kept in `table` ended (0 when there is none)."""
        at = self.oldest.get(table)
        return max(0.0, (self.clock() - at).total_seconds()) if at else 0.0
