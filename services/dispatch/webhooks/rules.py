"""The webhook decisions, pure: which event types exist, what an endpoint may subscribe
to, what an attempt's answer means for its delivery, and the signature headers."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from standardwebhooks.webhooks import Webhook

EVENT_TYPES = ("job.finished", "command.failed", "agent.enrolled", "agent.revoked", "agent.offline",
               "agent.online", "approval.requested", "schedule.run_failed")
# After the first attempt fails: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; then failed.
RETRY_AFTER_S = (5, 300, 1800, 7200, 18000, 36000, 36000)
ATTEMPTS = len(RETRY_AFTER_S) + 1
TIMEOUT_S = 10.0
ROTATION_OVERLAP = timedelta(hours=24)


def subscribable(pattern: str) -> bool:
    """An event type, `audit.<action>`, or a prefix pattern of them (`audit.*`)."""
    if pattern in EVENT_TYPES or pattern == "audit.*":
        return True
    if pattern.startswith("audit.") and len(pattern) <= 80:
        rest = pattern[len("audit."):]
        return bool(rest) and all(c.isalnum() or c in "._-" for c in rest) and not rest.endswith(".")
    return pattern.endswith(".*") and pattern[:-2] in {t.split(".")[0] for t in EVENT_TYPES}


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ and 24 random bytes, base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class Next:
    status: str                     # pending (retry), delivered or failed
    retry_in_s: float | None = None
    disable_endpoint: bool = False  # the receiver said 410 Gone


def after_attempt(attempts: int, status_code: int | None, scale: float = 1.0) -> Next:
    """What an attempt's answer (None: a timeout or a connection error) means, after
    `attempts` attempts in all."""
    if status_code is not None and 200 <= status_code < 300:
        return Next("delivered")
    if status_code == 410:
        return Next("failed", disable_endpoint=True)
    if attempts >= ATTEMPTS:
        return Next("failed")
    return Next("pending", retry_in_s=RETRY_AFTER_S[attempts - 1] * scale)


def signature(msg_id: str, at: datetime, body: bytes, secret: str, previous: str | None = None) -> str:
    """The webhook-signature header: one `v1,<base64>` per secret valid now, space-separated."""
    signs = [Webhook(secret).sign(msg_id, at, body)]
    if previous:
        signs.append(Webhook(previous).sign(msg_id, at, body))
    return " ".join(signs)
