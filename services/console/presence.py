"""How the console shows an agent's presence: pure functions of its row and the clock.

An active agent is `online` when it was seen within its poll interval plus a buffer (a
long-polling agent checks in at least once a minute; `last_seen_at` is written in batches
every few seconds), `offline` otherwise; a revoked agent is `revoked`."""

from __future__ import annotations

from datetime import datetime

BUFFER_S = 60


def presence(status: str, last_seen_at: datetime | None, now: datetime, poll_interval_s: int) -> str:
    if status != "active":
        return "revoked"
    if last_seen_at is not None and (now - last_seen_at).total_seconds() <= poll_interval_s + BUFFER_S:
        return "online"
    return "offline"


def ago(moment: datetime | None, now: datetime) -> str:
    """A relative time, as people say it: "just now", "42 s ago", "3 min ago", "5 h ago"."""
    if moment is None:
        return "never"
    seconds = int((now - moment).total_seconds())
    if seconds < 5:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
