"""Dispatch's wake-up channels (those auth notifies too are in services/common/db.py).

`fleetline_commands` is notified with agent ids whenever their held polls should look
again: commands were queued or released for them. Each dispatch process LISTENs on it
(listener.py). A transaction sends one notification naming every agent it wakes,
comma-separated, split only where a payload would pass PostgreSQL's limit (8,000 bytes):
WAKE_BATCH agents of 37 bytes each fit with room to spare.

`fleetline_output` is notified with a command id when its live output grows or it ends:
every dispatch process wakes the readers following that command's output."""

from services.common.db import AGENT_CHANNEL, NOTIFY_AGENT

__all__ = ["AGENT_CHANNEL", "NOTIFY_AGENT", "NOTIFY_AGENTS", "OUTPUT_CHANNEL", "WAKE_BATCH", "WEBHOOK_CHANNEL",
           "woken_agents"]
WAKE_BATCH = 200
# The agents of $1, in notifications of at most WAKE_BATCH each (one for most transactions).
NOTIFY_AGENTS = f"""
SELECT pg_notify('{AGENT_CHANNEL}', string_agg(a::text, ',')) FROM (
    SELECT a, (n - 1) / {WAKE_BATCH} AS batch FROM unnest($1::uuid[]) WITH ORDINALITY AS u(a, n)
) woken
 GROUP BY batch
"""

OUTPUT_CHANNEL = "fleetline_output"
# Notified (by webhook_emit(), migrations/0020) when a transaction made webhook deliveries:
# every dispatch's sender looks for due ones at once.
WEBHOOK_CHANNEL = "fleetline_webhooks"


def woken_agents(payload: str) -> list[str]:
    """The agent ids a notification on AGENT_CHANNEL names."""
    return [a for a in payload.split(",") if a]
