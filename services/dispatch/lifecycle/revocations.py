"""An agent revoked by an operator (auth notifies `fleetline_revoked` in the revocation's
transaction): every dispatch process wakes the agent's held poll (answered 403
agent_revoked), and its job commands not delivered yet end cancelled (commands.py decides
it; the reaper catches any a missed notification left), so their jobs move on at once.

Why not in the revocation's own transaction: those are transitions of commands, which
dispatch owns; auth writing them would give one transition two owners. The claim already
refuses a revoked agent, so the second between the two changes nothing an agent can do."""

from __future__ import annotations

import asyncio
import uuid

from fleetline.ethos import Log
from services.common.db import Db
from services.dispatch.lifecycle import commands, jobs
from services.dispatch.wakeups.waiters import Waiters

_log = Log("dispatch", "revocations")


class Revocations:
    def __init__(self, db: Db, waiters: Waiters):
        self.db, self.waiters = db, waiters
        self._tasks: set[asyncio.Task] = set()

    def revoked(self, agent_id: str) -> None:
        """From the LISTEN connection's callback: wake now, end its job commands soon."""
        self.waiters.wake(agent_id)
        task = asyncio.create_task(self._end_job_commands(agent_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_job_commands(self, agent_id: str) -> None:
        try:
            for job_id in await commands.cancel_revoked(self.db, uuid.UUID(agent_id)):
                await jobs.advance(self.db, job_id)
        except Exception as exc:  # the reaper's next beat ends what this could not
            _log.error("revocation_failed", agent_id=agent_id, error=exc, exc_info=exc)

    async def stop(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
