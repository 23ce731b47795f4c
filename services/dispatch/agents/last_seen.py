"""last_seen_at without one write per poll: polls mark agents in memory, and one batched
UPDATE per flush interval (default 5 s) writes them all. An agent written less than
FLEETLINE_LAST_SEEN_WRITE_S ago (default 30) is not marked again: a fleet of held polls
costs one row update per agent per that interval, whatever it polls. A crash loses at most
one interval of "last seen" times, never a command; every replica flushes its own batch."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

from fleetline.ethos import Log
from services.common.db import Db
from services.common.periodic import Periodic
from services.dispatch.agents import queries as q

_log = Log("dispatch", "last_seen")


class LastSeen(Periodic):
    def __init__(self, db: Db, interval_s: float, write_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.db, self.write_s, self.clock = db, write_s, clock
        self._pending: dict[str, datetime] = {}
        self._written: dict[str, float] = {}  # when each agent was last written (clock time)
        super().__init__("last_seen", interval_s, self.flush)

    def mark(self, agent_id: str) -> None:
        written = self._written.get(agent_id)
        if written is not None and self.clock() - written < self.write_s:
            return
        self._pending[agent_id] = datetime.now(timezone.utc)

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        ids = sorted(batch)  # same lock order in every replica
        try:
            await self.db.execute(q.TOUCH_AGENTS, ids, [batch[i] for i in ids])
            now = self.clock()
            self._written = {a: t for a, t in self._written.items() if now - t < self.write_s}
            self._written.update(dict.fromkeys(ids, now))
        except Exception as exc:
            # Put them back (newer marks win) and try again next interval.
            for agent_id, seen in batch.items():
                self._pending.setdefault(agent_id, seen)
            _log.error("flush_failed", agents=len(ids), error=exc, exc_info=exc)

    async def stop(self) -> None:
        await super().stop()
        await self.flush()  # what was seen since the last interval is not lost on shutdown
