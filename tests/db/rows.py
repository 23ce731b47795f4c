"""State arranged by writing rows, as the owner: agents, their tokens, times in the past."""

from __future__ import annotations

import json
import uuid


def agent(sql, status: str = "active", labels: dict | None = None, machine_id: str | None = None) -> uuid.UUID:
    """An agent registered with a token of its own."""
    token_id, agent_id = uuid.uuid4(), uuid.uuid4()
    sql.execute("INSERT INTO registration_tokens (id, token_hash, max_uses, uses, expires_at) "
                "VALUES (%s, %s, 1, 1, now() + interval '1 day')", (token_id, uuid.uuid4().bytes))
    sql.execute("INSERT INTO agents (id, machine_id, registration_token_id, hostname, labels, status, revoked_at) "
                "VALUES (%s, %s, %s, 'h', %s, %s, CASE WHEN %s = 'revoked' THEN now() END)",
                (agent_id, machine_id or f"m-{agent_id}", token_id, json.dumps(labels or {}), status, status))
    return agent_id


def status(sql, command_id) -> str:
    return sql.execute("SELECT status FROM commands WHERE id = %s", (command_id,)).fetchone()[0]


def lease_lapsed(sql, command_id) -> None:
    """The command's lease (or run) ran out a second ago."""
    sql.execute("UPDATE commands SET visible_at = now() - interval '1 s' WHERE id = %s", (command_id,))


def expired(sql, command_id) -> None:
    sql.execute("UPDATE commands SET expires_at = now() - interval '1 s' WHERE id = %s", (command_id,))
