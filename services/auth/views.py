"""How auth's records read in the API (never a secret)."""

from __future__ import annotations

from datetime import datetime

from services.common.validation import rfc3339


def token_view(row) -> dict:
    return {
        "id": str(row["id"]),
        "max_uses": row["max_uses"],
        "uses": row["uses"],
        "expires_at": rfc3339(row["expires_at"]),
        "note": row["note"],
        "created_at": rfc3339(row["created_at"]),
        "revoked_at": rfc3339(row["revoked_at"]),
    }


def agent_view(row, offline_after_s: float, now: datetime) -> dict:
    """An agent as the API says (`online`: seen within `offline_after_s`). Its facts are
    data it reported: shown as given, never interpreted."""
    seen = row["last_seen_at"]
    return {
        "id": str(row["id"]),
        "machine_id": row["machine_id"],
        "hostname": row["hostname"],
        "os": row["os"],
        "arch": row["arch"],
        "agent_version": row["agent_version"],
        "labels": row["labels"],
        "status": row["status"],
        "created_at": rfc3339(row["created_at"]),
        "last_seen_at": rfc3339(row["last_seen_at"]),
        "revoked_at": rfc3339(row["revoked_at"]),
        "online": row["status"] == "active" and seen is not None and (now - seen).total_seconds() <= offline_after_s,
        "facts": row["facts"],
        "facts_updated_at": rfc3339(row["facts_updated_at"]),
        "agent_labels": row["agent_labels"],
        "operator_labels": row["operator_labels"],
    }


def operator_view(row) -> dict:
    """Never a secret: no password hash, no token."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "role": row["role"],
        "scope": row["scope"] if row["role"] != "admin" else {"labels": {}, "command_types": ["*"]},
        "email": row["email"],
        "created_at": rfc3339(row["created_at"]),
        "disabled_at": rfc3339(row["disabled_at"]),
    }


def operator_token_view(row) -> dict:
    return {
        "id": str(row["id"]),
        "operator_id": str(row["operator_id"]),
        "note": row["note"],
        "created_at": rfc3339(row["created_at"]),
        "expires_at": rfc3339(row["expires_at"]),
        "revoked_at": rfc3339(row["revoked_at"]),
        "last_used_at": rfc3339(row["last_used_at"]),
    }


def audit_view(row) -> dict:
    return {
        "id": str(row["id"]),
        "at": rfc3339(row["at"]),
        "actor": {"type": row["actor_type"], "id": str(row["actor_id"]) if row["actor_id"] else None,
                  "name": row["actor_name"]},
        "action": row["action"],
        "target": {"type": row["target_type"], "id": row["target_id"]},
        "outcome": row["outcome"],
        "request_id": row["request_id"],
        "source_ip": row["source_ip"],
        "details": row["details"],
    }
