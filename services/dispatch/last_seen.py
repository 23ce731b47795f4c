"""last_seen_at without one write per poll: polls mark agents in memory, and one batched
UPDATE per flush interval (default 5 s) writes them all. A crash loses at most one
interval of "last seen" times, never a command; every replica flushes its own batch."""

from __future__ import annotations

from datetime import datetime, timezone

from services.common.db import Db
from fleetline.ethos import Log
from services.dispatch import queries as q
from services.common.periodic import Periodic

_log = Log("dispatch", "last_seen")


class LastSeen(Periodic):
    def __init__(self, db: Db, interval_s: float):
        self.db = db
        self._pending: dict[str, datetime] = {}
        super().__init__("last_seen", interval_s, self.flush)

    def mark(self, agent_id: str) -> None:
        self._pending[agent_id] = datetime.now(timezone.utc)

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        ids = sorted(batch)  # same lock order in every replica
        try:
            await self.db.execute(q.TOUCH_AGENTS, ids, [batch[i] for i in ids])
        except Exception as exc:
            # Put them back (newer marks win) and try again next interval.
            for agent_id, seen in batch.items():
                self._pending.setdefault(agent_id, seen)
            _log.error("flush_failed", agents=len(ids), error=exc, exc_info=exc)

    async def stop(self) -> None:
        await super().stop()
        await self.flush()  # what was seen since the last interval is not lost on shutdown
