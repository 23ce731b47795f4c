"""The command state machine: the one place that says which transitions exist and how a
request that finds a command in some state is answered.

    pending --claim--> sent --ack--> running --result--> succeeded | failed
                        |  \\                  \\
                        |   ack timeout,       run timeout --> timed_out
                        |   retries left --> sent (retry_count + 1, redelivered)
                        |   ack timeout, retries used up --> timed_out
    pending|sent --expires_at--> expired        pending|sent|running --cancel--> cancelled

The transitions themselves happen in SQL (queries.py), each guarded by the states it
expects; this module interprets what those guarded statements found.
"""

from __future__ import annotations

from typing import Any

from services.common.errors import conflict, forbidden, invalid_token, not_found
from services.common.validation import rfc3339

STATUSES = ("pending", "sent", "running", "succeeded", "failed", "timed_out", "expired", "cancelled")
LIVE = frozenset({"pending", "sent", "running"})
FINAL = frozenset(STATUSES) - LIVE
OUTCOMES = ("succeeded", "failed")

# Every legal transition; tests check the SQL never produces anything else.
TRANSITIONS = frozenset({
    ("pending", "sent"), ("sent", "sent"), ("sent", "running"),
    ("sent", "succeeded"), ("sent", "failed"), ("running", "succeeded"), ("running", "failed"),
    ("sent", "timed_out"), ("running", "timed_out"),
    ("pending", "expired"), ("sent", "expired"),
    ("pending", "cancelled"), ("sent", "cancelled"), ("running", "cancelled"),
})


def state_view(row: Any, **override: Any) -> dict:
    """The command state object of API.md (plus a few operator extras)."""
    get = lambda k: override.get(k, row[k])  # noqa: E731
    return {
        "id": str(row["id"]),
        "agent_id": str(row["agent_id"]),
        "type": row["type"],
        "params": row["params"],
        "status": get("status"),
        "priority": row["priority"],
        "retry_count": row["retry_count"],
        "max_retries": row["max_retries"],
        "delivery_count": row["delivery_count"],
        "ack_timeout_s": row["ack_timeout_s"],
        "run_timeout_s": row["run_timeout_s"],
        "idempotency_key": row["idempotency_key"],
        "created_at": rfc3339(row["created_at"]),
        "sent_at": rfc3339(row["sent_at"]),
        "acked_at": rfc3339(get("acked_at")),
        "finished_at": rfc3339(get("finished_at")),
        "expires_at": rfc3339(row["expires_at"]),
        "result": get("result"),
    }


def delivery_view(row: Any) -> dict:
    """A command as the poll hands it to the agent."""
    return {
        "id": str(row["id"]),
        "type": row["type"],
        "params": row["params"],
        "created_at": rfc3339(row["created_at"]),
        "expires_at": rfc3339(row["expires_at"]),
        "delivery": row["delivery_count"],
        "run_timeout_s": row["run_timeout_s"],
    }


def check_agent(agent_status: str | None) -> None:
    """The agent row as the statement saw it: gone (401) or revoked (403)."""
    if agent_status is None:
        raise invalid_token("The token's agent does not exist.")
    if agent_status != "active":
        raise forbidden("agent_revoked", "This agent has been revoked.")


def _check_found(row: Any) -> None:
    """What an agent's ack or result statement found: its agent (401/403), its command (404)."""
    if row is None:
        raise invalid_token("The token's agent does not exist.")
    check_agent(row["agent_status"])
    if row["id"] is None:
        raise not_found("No such command for this agent.")


def ack_answer(row: Any) -> dict:
    """sent -> running happened, or why not. Repeats and final commands answer 200:
    the agent reads the status and must not run a final command."""
    _check_found(row)
    if row["new_status"] is not None:
        return state_view(row, status=row["new_status"], acked_at=row["new_acked_at"])
    if row["status"] == "pending":
        raise conflict("This command has not been delivered yet; poll for it first.")
    return state_view(row)


def result_answer(row: Any, outcome: str, result: dict) -> dict:
    """sent|running -> outcome happened, or why not: the same outcome again is a no-op,
    anything else for a command that already ended is 409 and changed nothing."""
    _check_found(row)
    if row["new_status"] is not None:
        return state_view(row, status=row["new_status"], finished_at=row["new_finished_at"],
                          result=row["new_result"])
    status = row["status"]
    if status in OUTCOMES and status == outcome and (row["result"] or {}).get("exit_code") == result.get("exit_code"):
        return state_view(row)
    if status in OUTCOMES:
        raise conflict(f"This command already ended {status} with another outcome.")
    if status == "pending":
        raise conflict("This command has not been delivered yet.")
    raise conflict(f"This command is {status}; its result is no longer accepted.")
