"""last_seen_at without one write per poll: polls mark agents in memory, and one batched
UPDATE per flush interval (default 5 s) writes them all. A crash loses at most one
interval of "last seen" times, never a command; every replica flushes its own batch."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from services.common.db import Db
from services.common.ethos import Log
from services.dispatch import queries as q

_log = Log("dispatch", "last_seen")


class LastSeen:
    def __init__(self, db: Db, interval_s: float):
        self.db, self.interval_s = db, interval_s
        self._pending: dict[str, datetime] = {}
        self._task: asyncio.Task | None = None

    def mark(self, agent_id: str) -> None:
        self._pending[agent_id] = datetime.now(timezone.utc)

    async def flush(self) -> int:
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        ids = sorted(batch)  # same lock order in every replica
        try:
            await self.db.execute(q.TOUCH_AGENTS, ids, [batch[i] for i in ids])
        except Exception as exc:
            # Put them back (newer marks win) and try again next interval.
            for agent_id, seen in batch.items():
                self._pending.setdefault(agent_id, seen)
            _log.error("flush_failed", agents=len(ids), error=exc)
            return 0
        return len(ids)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
