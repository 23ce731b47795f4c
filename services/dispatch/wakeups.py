"""Long-poll wake-ups: one LISTEN connection per process on `fleetline_commands` (notified
with the agent id when a command is queued) wakes the polls parked for that agent here.

The connection is supervised: pinged every PING_S, reconnected with backoff when it
drops, and after each reconnect one catch-up query wakes the parked agents that got
commands meanwhile. While it is down, /readyz says so (`listening` is False) and parked
polls still find their commands at their next re-check."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg

from fleetline.ethos import Log
from services.dispatch import queries as q

CHANNEL = "fleetline_commands"
PING_S = 5.0
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.5, 10.0
_log = Log("dispatch", "wakeups")

class Wakeups:
    def __init__(self, dsn: str):
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task | None = None
        self._lost = asyncio.Event()
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

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
        await conn.add_listener(CHANNEL, self._on_notify)
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
        parked = list(self._waiters)
        if not parked:
            return
        for (agent_id,) in await self._conn.fetch(q.CATCH_UP, parked):
            self._wake(agent_id)

    def held(self) -> int:
        """Polls parked in this process right now."""
        return sum(len(w) for w in self._waiters.values())

    def _on_notify(self, conn, pid, channel, agent_id: str) -> None:
        self._wake(agent_id)

    def _wake(self, agent_id: str) -> None:
        for event in self._waiters.get(agent_id, ()):
            event.set()

    async def wait(self, agent_id: str, timeout: float, departed: asyncio.Future) -> None:
        """Until a command is queued for the agent, `timeout` passes, or the client leaves
        (`departed` is done)."""
        event = asyncio.Event()
        self._waiters[agent_id].add(event)
        woken = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((woken, departed), timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            waiters = self._waiters[agent_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[agent_id]


async def departure(receive) -> None:
    """Ends when the HTTP client goes away. Only for requests whose body nobody reads
    (the poll is a GET): every message but the disconnect is the empty body."""
    while (await receive())["type"] != "http.disconnect":
        pass
