"""last_seen_at, batched and spaced: one write per flush for everything marked, and an agent
written less than FLEETLINE_LAST_SEEN_WRITE_S ago is not written again, whatever it polls."""

from __future__ import annotations

from services.dispatch.agents.last_seen import LastSeen
from tests.db import rows
from tests.integration.dbstate import count_statements


async def test_an_agent_is_written_at_most_once_per_write_interval(db, sql):
    now = [1000.0]
    seen = LastSeen(db, interval_s=3600, write_s=30, clock=lambda: now[0])
    agents = [str(rows.agent(sql)) for _ in range(3)]
    updates = count_statements(sql, "UPDATE", "agents")
    for agent in agents:
        seen.mark(agent)
    await seen.flush()
    assert updates() == 1
    first = dict(sql.execute("SELECT id::text, last_seen_at FROM agents").fetchall())
    now[0] += 29  # polls within the interval: nothing to write
    for agent in agents * 5:
        seen.mark(agent)
    await seen.flush()
    assert updates() == 1
    now[0] += 2  # past it: written again, once, in one statement
    for agent in agents * 5:
        seen.mark(agent)
    await seen.flush()
    assert updates() == 2
    later = dict(sql.execute("SELECT id::text, last_seen_at FROM agents").fetchall())
    assert all(later[a] > first[a] for a in agents)
