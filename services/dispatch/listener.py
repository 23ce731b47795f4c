"""The LISTEN connection: one per dispatch process on `fleetline_commands` (notified with
the ids of the agents commands were queued or released for, comma-separated), handing each agent id to
`wake`; on `fleetline_revoked` (an agent revoked), handing it to `revoked`; and on
`fleetline_output` (a command's output grew or it ended), waking its output's followers.

The connection is supervised: pinged every PING_S, reconnected with backoff when it
drops, and after each reconnect one catch-up query wakes the parked agents that got
commands meanwhile (and every output follower reads again). While it is down, /readyz says so (`listening` is False) and parked
polls fall back to re-checking on a timer (waiters.py)."""

from __future__ import annotations

import asyncio

import asyncpg

from fleetline.ethos import Log
from typing import Callable

from services.common.db import AGENT_CHANNEL, OUTPUT_CHANNEL, REVOKED_CHANNEL, woken_agents
from services.dispatch import queries as q
from services.dispatch.output import Followers
from services.dispatch.waiters import Waiters

PING_S = 5.0
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.5, 10.0
_log = Log("dispatch", "listener")

class Listener:
    def __init__(self, dsn: str, waiters: Waiters, revoked: Callable[[str], None],
                 followers: Followers | None = None):
        self.dsn, self.waiters, self.revoked = dsn, waiters, revoked
        self.followers = followers or Followers()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task | None = None
        self._lost = asyncio.Event()

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close(timeout=2)

    async def _supervise(self) -> None:
        delay, first = RECONNECT_FIRST_S, True
        while True:
            try:
                await self._listen()
                if not first:
                    await self._catch_up()
                    _log.info("listen_restored")
                first, delay = False, RECONNECT_FIRST_S
                while await self._healthy():
                    pass
                _log.warning("listen_lost", next_retry_in=f"{delay:.1f}s")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
                _log.warning("listen_failed", error=exc, next_retry_in=f"{delay:.1f}s")
                first = False
            await self._close()
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)

    async def _listen(self) -> None:
        self._lost.clear()
        conn = await asyncpg.connect(self.dsn, timeout=5)
        conn.add_termination_listener(lambda _conn: self._lost.set())
        await conn.add_listener(AGENT_CHANNEL, self._on_notify)
        await conn.add_listener(REVOKED_CHANNEL, self._on_revoked)
        await conn.add_listener(OUTPUT_CHANNEL, self._on_output)
        self._conn = conn

    async def _healthy(self) -> bool:
        """Wait one ping interval (or for the connection to end); True while it answers."""
        try:
            await asyncio.wait_for(self._lost.wait(), PING_S)
            return False
        except asyncio.TimeoutError:
            pass
        try:
            await self._conn.fetchval("SELECT 1", timeout=PING_S)
            return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
            return False

    async def _catch_up(self) -> None:
        self.followers.wake_all()
        parked = self.waiters.parked_agents()
        if not parked:
            return
        for (agent_id,) in await self._conn.fetch(q.CATCH_UP, parked):
            self.waiters.wake(agent_id)

    def _on_notify(self, conn, pid, channel, payload: str) -> None:
        for agent_id in woken_agents(payload):
            self.waiters.wake(agent_id)

    def _on_revoked(self, conn, pid, channel, agent_id: str) -> None:
        self.revoked(agent_id)

    def _on_output(self, conn, pid, channel, command_id: str) -> None:
        self.followers.wake(command_id)
