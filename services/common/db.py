"""Database lifecycle and a thin query layer over `databases` + asyncpg.

`databases` owns the pool and the per-task connection (so `transaction()` and the
queries inside it share one connection); queries go to asyncpg directly with `$n`
parameters, so each statement is prepared once per connection and never re-compiled.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Mapping

import databases

# The channels more than one service uses (dispatch's own are in
# services/dispatch/wakeups/channels.py).

# Notified with an agent id when an operator revokes it (auth): every dispatch process wakes
# its held poll (answered 403 agent_revoked) and dispatch cancels its job commands not
# delivered yet (services/dispatch/lifecycle/revocations.py).
# Notified with agent ids whenever their held polls should look again (commands queued or
# released, a cancel, fresh facts asked for): dispatch listens (wakeups/listener.py), and
# auth notifies it too (an operator asking an agent for its facts).
AGENT_CHANNEL = "fleetline_commands"
NOTIFY_AGENT = f"SELECT pg_notify('{AGENT_CHANNEL}', $1::text)"
REVOKED_CHANNEL = "fleetline_revoked"
NOTIFY_REVOKED_AGENT = f"SELECT pg_notify('{REVOKED_CHANNEL}', $1::text)"

# Notified (queries.NOTIFY_OPERATOR_CHANGED) by every change that can refuse an operator's
# credential, with the operator's id: every process of every service forgets the operators
# it had cached (operators.py).
OPERATOR_CHANNEL = "fleetline_operators"


async def _keep_session(conn: Any) -> None:
    """Pool release without asyncpg's default reset query (one more round trip per
    statement). Safe because nothing here leaves session state on a pooled connection:
    no SET (SET LOCAL ends with its transaction), LISTEN, advisory lock or temp table, and
    transactions always end."""


async def _init_connection(conn: Any) -> None:
    # jsonb in and out as Python objects, everywhere.
    await conn.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )
    await conn.set_type_codec(
        "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )


class Db:
    def __init__(
        self,
        url: str,
        *,
        max_size: int = 10,
        server_settings: Mapping[str, str] | None = None,
    ):
        self.database = databases.Database(
            url,
            min_size=1,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
            server_settings=dict(server_settings or {}),
            statement_cache_size=256,
        )

    async def connect(self) -> None:
        await self.database.connect()

    async def disconnect(self) -> None:
        if self.database.is_connected:
            await self.database.disconnect()

    @asynccontextmanager
    async def _raw(self) -> AsyncIterator[Any]:
        async with self.database.connection() as conn:
            yield conn.raw_connection

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._raw() as conn:
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        async with self._raw() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._raw() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self._raw() as conn:
            return await conn.execute(sql, *args)

    def transaction(self) -> Any:
        """Queries awaited inside `async with db.transaction():` share its connection."""
        return self.database.transaction()

    async def ping(self) -> bool:
        try:
            return await self.fetchval("SELECT 1") == 1
        except Exception:
            return False

