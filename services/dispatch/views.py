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
        "job_id": str(row["job_id"]) if row["job_id"] is not None else None,
        "created_by": by(row, "created_by"),
        "cancelled_by": by(row, "cancelled_by"),
        "cancel_requested_at": rfc3339(row["cancel_requested_at"]),
        **approval_fields(row),
    }


def approval_fields(row: Mapping[str, Any]) -> dict:
    """`approvals` (API 1.2), and how many were required and why a request was denied."""
    return {"approvals": list(row["approvals"]), "approvals_required": row["approvals_required"],
            "denied_reason": row["denied_reason"]}


def by(row: Mapping[str, Any], who: str) -> dict | None:
    """`created_by` / `cancelled_by`: {"id", "name"} of the operator, or None."""
    name = row[f"{who}_name"]
    if name is None:
        return None
    return {"id": str(row[f"{who}_id"]) if row[f"{who}_id"] else None, "name": name}


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


def job_view(row: Mapping[str, Any], counts: Mapping[str, int]) -> dict:
    """The job object: its request as normalized, and counts read from its commands."""
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "selector": row["selector"],
        "command": row["command"],
        "rollout": row["rollout"],
        "target_count": row["target_count"],
        "counts": dict(counts),
        "created_at": rfc3339(row["created_at"]),
        "finished_at": rfc3339(row["finished_at"]),
        "halted_reason": row["halted_reason"],
        "idempotency_key": row["idempotency_key"],
        "created_by": by(row, "created_by"),
        "cancelled_by": by(row, "cancelled_by"),
        **approval_fields(row),
        "approval_expires_at": rfc3339(row["approval_expires_at"]),
        "schedule_id": str(row["schedule_id"]) if row["schedule_id"] else None,
        "scheduled_for": rfc3339(row["scheduled_for"]),
    }


def schedule_view(row: Mapping[str, Any]) -> dict:
    """A schedule (API 1.3), with its newest run."""
    last = None
    if row["last_scheduled_for"] is not None:
        last = run_view({"scheduled_for": row["last_scheduled_for"], "started_at": row["last_started_at"],
                         "job_id": row["last_job_id"], "outcome": row["last_outcome"], "detail": row["last_detail"]})
        last["job_status"] = row["last_job_status"]
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "selector": row["selector"],
        "command": row["command"],
        "rollout": row["rollout"],
        "cron": row["cron"],
        "timezone": row["timezone"],
        "interval_s": row["interval_s"],
        "overlap": row["overlap"],
        "catch_up": row["catch_up"],
        "enabled": row["status"] != "paused",
        "status": row["status"],
        "paused_reason": row["paused_reason"],
        "next_run_at": rfc3339(row["next_run_at"]) if row["status"] == "active" else None,
        "last_run": last,
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
        "created_by": by(row, "created_by"),
        **approval_fields(row),
    }


def run_view(row: Mapping[str, Any]) -> dict:
    return {"scheduled_for": rfc3339(row["scheduled_for"]), "started_at": rfc3339(row["started_at"]),
            "job_id": str(row["job_id"]) if row["job_id"] else None, "outcome": row["outcome"],
            "detail": row["detail"]}


def target_view(row: Mapping[str, Any]) -> dict:
    return {
        "agent_id": str(row["agent_id"]),
        "hostname": row["hostname"],
        "command_id": str(row["command_id"]),
        "status": row["status"],
        "result": row["result"],
    }


def policy_view(row: Mapping[str, Any]) -> dict:
    """The approval policy (API 1.2), with when and by whom it was last set."""
    return {"rules": list(row["rules"]), "approvals": row["approvals"], "expires_in_s": row["expires_in_s"],
            "updated_at": rfc3339(row["updated_at"]), "updated_by": row["updated_by_name"]}
