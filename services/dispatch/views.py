"""JSON views of commands: the state object of the API, and a command as the poll hands
it to its agent."""

from __future__ import annotations

from typing import Any, Mapping

from services.common.validation import rfc3339


def state_view(row: Mapping[str, Any]) -> dict:
    """The command state object (plus a few operator extras)."""
    return {
        "id": str(row["id"]),
        "agent_id": str(row["agent_id"]),
        "type": row["type"],
        "params": row["params"],
        "status": row["status"],
        "priority": row["priority"],
        "retry_count": row["retry_count"],
        "max_retries": row["max_retries"],
        "delivery_count": row["delivery_count"],
        "ack_timeout_s": row["ack_timeout_s"],
        "run_timeout_s": row["run_timeout_s"],
        "idempotency_key": row["idempotency_key"],
        "created_at": rfc3339(row["created_at"]),
        "sent_at": rfc3339(row["sent_at"]),
        "acked_at": rfc3339(row["acked_at"]),
        "finished_at": rfc3339(row["finished_at"]),
        "expires_at": rfc3339(row["expires_at"]),
        "result": row["result"],
    }


def delivery_view(row: Mapping[str, Any]) -> dict:
    """A command as the poll hands it to the agent."""
    return {
        "id": str(row["id"]),
        "type": row["type"],
        "params": row["params"],
        "created_at": rfc3339(row["created_at"]),
        "expires_at": rfc3339(row["expires_at"]),
        "delivery": row["delivery_count"],
        "run_timeout_s": row["run_timeout_s"],
        # What the agent verifies and runs; the fields above are an unsigned copy.
        "signed": row["signed"],
    }
