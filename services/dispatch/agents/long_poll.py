"""An agent's poll: claim what is due for it now; with `wait`, hold the request while
nothing is, at no cost (services/dispatch/wakeups/), and claim again when something may be.
The HTTP handler (api.py) authenticates, limits and renders; this decides what to claim
when.

The poll takes its ticket before the first claim, so a command queued while that claim
runs (a wake-up the claim's snapshot was too early to see) ends the wait at once."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Callable

from prometheus_client import Counter

from fleetline.ethos import Log
from services.common.db import Db
from services.dispatch.lifecycle import commands
from services.dispatch.wakeups.waiters import DEADLINE, DEPARTED, RECHECK_S, Waiters

_log = Log("dispatch", "poll")
JITTER_MAX_S = 3.0  # a held poll ends up to this much early (10 % of its wait at most)


class LongPolls:
    def __init__(self, db: Db, waiters: Waiters, policy: commands.PollPolicy, listening: Callable[[], bool],
                 claimed: Counter, statements: Counter):
        self.db, self.waiters, self.policy, self.listening = db, waiters, policy, listening
        self.claimed, self.statements = claimed, statements

    async def poll(self, agent_id: str, limit: int, wait: int, receive: Callable) -> commands.Claim | None:
        """What the poll answers: the commands claimed and the cancels handed over (none
        when `wait` passed first), or None when the client left while it was held (then
        nothing was claimed for it)."""
        if wait <= 0:
            return await self._claim(agent_id, limit)
        loop = asyncio.get_running_loop()
        # A little random jitter off the wait, so a fleet's polls do not all end in step.
        deadline = loop.time() + wait - random.uniform(0.0, min(wait * 0.1, JITTER_MAX_S))
        with self.waiters.ticket(agent_id) as ticket:
            claim = await self._claim(agent_id, limit)
            while not claim.answers:
                reason = await ticket.wait(deadline, receive, None if self.listening() else RECHECK_S)
                if reason == DEPARTED:
                    _log.debug("poll_abandoned", agent_id=agent_id)
                    return None
                if reason == DEADLINE:
                    return claim  # nothing was due: the first claim's answer stands
                again = await self._claim(agent_id, limit)
                if again.answers:
                    return again
            return claim

    async def _claim(self, agent_id: str, limit: int) -> commands.Claim:
        claim = await commands.claim(self.db, uuid.UUID(agent_id), limit, self.policy)
        self.statements.inc()
        if claim.commands:
            self.claimed.inc(len(claim.commands))
            # Wake this agent's next held poll when the lease runs out (a redelivery).
            self.waiters.lease_due_in(agent_id, min(r["ack_timeout_s"] for r in claim.commands))
        return claim
