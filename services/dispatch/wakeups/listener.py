"""Dispatch's LISTEN connection (services/common/notifications.py: one per process,
supervised): on `fleetline_commands` (the ids of the agents commands were queued or
released for, comma-separated) it wakes their held polls; on `fleetline_revoked` (an agent
revoked) it hands the id to `revoked`; on `fleetline_output` (a command's output grew or it
ended) it wakes that output's followers; on `fleetline_operators` (an operator or its
token changed) it forgets the operators it had cached; on `fleetline_webhooks` (webhook
deliveries were made) it wakes the webhook sender.

After a reconnect, one catch-up query wakes the parked agents that got commands meanwhile,
and every output follower reads again. While it is down, /readyz says so and parked polls
fall back to re-checking on a timer (waiters.py)."""

from __future__ import annotations

from typing import Callable

import asyncpg

from services.common.db import OPERATOR_CHANNEL, REVOKED_CHANNEL
from services.common.notifications import Notifications
from services.dispatch.wakeups import queries as q
from services.dispatch.wakeups.channels import (
    AGENT_CHANNEL,
    OUTPUT_CHANNEL,
    WEBHOOK_CHANNEL,
    woken_agents,
)
from services.dispatch.wakeups.parking import Parking
from services.dispatch.wakeups.waiters import Waiters


class Listener(Notifications):
    def __init__(self, dsn: str, waiters: Waiters, revoked: Callable[[str], None],
                 followers: Parking | None = None, operators_changed: Callable[[str], None] = lambda _: None,
                 deliveries_made: Callable[[str], None] = lambda _: None):
        self.waiters, self.followers = waiters, followers or Parking()
        self._operators_changed = operators_changed
        super().__init__(dsn, {
            AGENT_CHANNEL: self._on_notify,
            REVOKED_CHANNEL: revoked,
            OUTPUT_CHANNEL: self.followers.wake,
            OPERATOR_CHANNEL: operators_changed,
            WEBHOOK_CHANNEL: deliveries_made,
        }, restored=self._catch_up, component="dispatch")

    async def _catch_up(self, conn: asyncpg.Connection) -> None:
        self._operators_changed("")
        self.followers.wake_all()
        parked = self.waiters.keys()
        if not parked:
            return
        for (agent_id,) in await conn.fetch(q.CATCH_UP, parked):
            self.waiters.wake(agent_id)

    def _on_notify(self, payload: str) -> None:
        for agent_id in woken_agents(payload):
            self.waiters.wake(agent_id)
