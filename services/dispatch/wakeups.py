"""Long-poll wake-ups: LISTEN on `fleetline_commands` (notified when a command is queued)
and wake the polls waiting for that agent in this process."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg

from fleetline.ethos import Log

CHANNEL = "fleetline_commands"
_log = Log("dispatch", "wakeups")


class Wakeups:
    def __init__(self, dsn: str):
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    async def start(self) -> None:
        try:
            self._conn = await asyncpg.connect(self.dsn)
            await self._conn.add_listener(CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError) as exc:
            # Long polls still work without it: they re-check on a timer.
            _log.warning("listen_failed", error=exc)
            self._conn = None

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def held(self) -> int:
        """Polls parked in this process right now."""
        return sum(len(w) for w in self._waiters.values())

    def _on_notify(self, conn, pid, channel, agent_id: str) -> None:
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
