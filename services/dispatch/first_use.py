"""The first use of an agent's credentials, marked before any agent request is answered
(registering its machine again is refused from then on: auth's enrolment.py). One UPDATE per
agent per process: later requests find the agent in memory and write nothing."""

from __future__ import annotations

import uuid

from services.common.db import Db
from services.dispatch import queries as q


class FirstUse:
    CACHE_SIZE = 65536

    def __init__(self, db: Db):
        self.db = db
        self._marked: set[str] = set()

    async def mark(self, agent_id: str) -> None:
        if agent_id in self._marked:
            return
        await self.db.execute(q.MARK_AGENT_USED, uuid.UUID(agent_id))
        if len(self._marked) >= self.CACHE_SIZE:
            self._marked.clear()  # bounded; a refill costs one no-op UPDATE per agent
        self._marked.add(agent_id)
