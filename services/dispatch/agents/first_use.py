"""The first use of an agent's credentials, marked before any agent request is answered
(registering its machine again is refused from then on: auth's enrolment.py).

Marks are written together: while one write is under way, the agents seen meanwhile wait
for the next, one statement (and one durable commit) for all of them. A fleet enrolled at
once used to queue one commit per agent (~190 first polls/s at 5 ms a commit); now a
burst costs a few commits. Each request still waits for its own mark to commit before it
is answered. Later requests find the agent in memory and write nothing."""

from __future__ import annotations

import asyncio
import uuid

from services.common.db import Db
from services.dispatch.agents import queries as q


class FirstUse:
    CACHE_SIZE = 65536

    def __init__(self, db: Db):
        self.db = db
        self._marked: set[str] = set()
        self._next: set[str] = set()  # waiting for the next write
        self._next_done: asyncio.Future | None = None
        self._writer: asyncio.Task | None = None
        self.writes = 0  # statements run (tests and metrics compare them with agents marked)

    async def mark(self, agent_id: str) -> None:
        if agent_id in self._marked:
            return
        if self._next_done is None:
            self._next_done = asyncio.get_running_loop().create_future()
            # Read whatever becomes of it, so an error nobody awaited any more is not logged
            # as "never retrieved" (every request still waiting raises it).
            self._next_done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._next.add(agent_id)
        done = self._next_done
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        # Shielded: a client that leaves does not cancel the write the others wait for.
        await asyncio.shield(done)

    async def _write(self) -> None:
        try:
            while self._next_done is not None:
                batch, done = self._next, self._next_done
                self._next, self._next_done = set(), None
                try:
                    await self.db.execute(q.MARK_AGENTS_USED, sorted(uuid.UUID(a) for a in batch))
                except Exception as exc:  # each request waiting answers it (logged there, once)
                    done.set_exception(exc)
                    continue
                self.writes += 1
                if len(self._marked) + len(batch) > self.CACHE_SIZE:
                    self._marked.clear()  # bounded; a refill costs a no-op UPDATE per agent
                self._marked |= batch
                done.set_result(None)
        finally:
            self._writer = None
