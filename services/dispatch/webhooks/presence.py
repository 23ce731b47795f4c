"""The presence sweep: one statement per interval finds the agents that went offline (not
seen within FLEETLINE_OFFLINE_AFTER_S) or came back, and emits agent.offline or
agent.online for each, once (queries.PRESENCE_SWEEP)."""

from __future__ import annotations

from typing import Callable

from fleetline.ethos import Log
from services.common.db import Db
from services.dispatch.webhooks import queries as q

_log = Log("dispatch", "presence")


class PresenceSweep:
    def __init__(self, db: Db, offline_after_s: float, offline: Callable[[int], None] = lambda n: None):
        self.db, self.offline_after_s, self.offline = db, offline_after_s, offline

    async def step(self) -> int:
        row = await self.db.fetchrow(q.PRESENCE_SWEEP, float(self.offline_after_s))
        if row["changed"]:
            _log.info("presence_changed", agents=row["changed"], deliveries=row["deliveries"])
        self.offline(await self.db.fetchval(q.OFFLINE_AGENTS))
        return row["changed"]
