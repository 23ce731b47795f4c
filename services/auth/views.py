"""How auth's records read in the API (never a secret)."""

from __future__ import annotations

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


def agent_view(row) -> dict:
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
    }
