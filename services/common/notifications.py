"""One supervised LISTEN connection per process: each channel's notifications handed to its
handler, in the event loop.

The connection is pinged every PING_S and reconnected with backoff when it drops. After a
reconnect, `restored(connection)` runs: notifications sent during the gap were lost, so
whoever relies on them catches up there (dispatch wakes the polls that got commands;
every service forgets the operators it had cached). While the connection is down,
`listening` is False: /readyz says so, and caches that notifications keep fresh are not
trusted."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Mapping

import asyncpg

from fleetline.ethos import Log

PING_S = 5.0
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.5, 10.0


async def _nothing(conn: asyncpg.Connection) -> None:
    pass


class Notifications:
    def __init__(self, dsn: str, handlers: Mapping[str, Callable[[str], None]],
                 restored: Callable[[asyncpg.Connection], Awaitable[None]] = _nothing,
                 component: str = "common"):
        self.dsn, self.handlers, self.restored = dsn, dict(handlers), restored
        self._log = Log(component, "listener")
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
                    await self.restored(self._conn)
                    self._log.info("listen_restored")
                first, delay = False, RECONNECT_FIRST_S
                while await self._healthy():
                    pass
                self._log.warning("listen_lost", next_retry_in=f"{delay:.1f}s")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
                self._log.warning("listen_failed", error=exc, next_retry_in=f"{delay:.1f}s")
                first = False
            await self._close()
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)

    async def _listen(self) -> None:
        self._lost.clear()
        conn = await asyncpg.connect(self.dsn, timeout=5)
        conn.add_termination_listener(lambda _conn: self._lost.set())
        for channel, handler in self.handlers.items():
            await conn.add_listener(channel, lambda _c, _pid, _ch, payload, h=handler: h(payload))
        self._conn = conn

    async def _healthy(self) -> bool:
        """Wait one ping interval (or for the connection to end); True while it answers."""
        try:
            await asyncio.wait_for(self._lost.wait(), PING_S)
            return False
        except asyncio.TimeoutError:
            pass
        conn = self._conn
        if conn is None:
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=PING_S)
            return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
            return False
