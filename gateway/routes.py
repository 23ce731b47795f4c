"""The gateway's route table: every path of docs/api.md, and which service owns it.

Checked in order; the first match wins. Anything else is the gateway's own 404.
"""

from __future__ import annotations

from urllib.parse import parse_qs

AUTH, DISPATCH, CONSOLE = "auth", "dispatch", "console"

# (match kind, path, service). "exact" compares the whole path; "prefix" its start.
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("exact", "/api/v1/agents/register", AUTH),
    ("exact", "/api/v1/agents/renew", AUTH),
    ("exact", "/.well-known/jwks.json", AUTH),
    ("exact", "/api/v1/admin/registration-tokens", AUTH),
    ("prefix", "/api/v1/admin/registration-tokens/", AUTH),
    ("exact", "/api/v1/admin/agents", AUTH),
    ("prefix", "/api/v1/admin/agents/", AUTH),
    ("exact", "/api/v1/admin/whoami", AUTH),
    ("exact", "/api/v1/admin/operators", AUTH),
    ("prefix", "/api/v1/admin/operators/", AUTH),
    ("prefix", "/api/v1/admin/operator-tokens/", AUTH),
    ("exact", "/api/v1/admin/sign-out", AUTH),
    ("exact", "/api/v1/admin/audit", AUTH),
    ("exact", "/api/v1/operators/sign-in", AUTH),
    ("exact", "/api/v1/operators/sign-in/oidc-nonce", AUTH),
    ("prefix", "/api/v1/agents/", DISPATCH),  # /api/v1/agents/{id}/commands[...], keyset
    ("exact", "/api/v1/admin/commands", DISPATCH),
    ("prefix", "/api/v1/admin/commands/", DISPATCH),
    ("exact", "/api/v1/admin/command-keyset", DISPATCH),
    ("exact", "/api/v1/admin/approval-policy", DISPATCH),
    ("exact", "/api/v1/admin/jobs", DISPATCH),
    ("prefix", "/api/v1/admin/jobs/", DISPATCH),
    ("exact", "/api/v1/admin/agent-releases", DISPATCH),
    ("prefix", "/api/v1/admin/agent-releases/", DISPATCH),
    ("prefix", "/api/v1/agent-releases/", DISPATCH),  # downloads: no authentication
    ("exact", "/api/v1/admin/webhooks", DISPATCH),
    ("prefix", "/api/v1/admin/webhooks/", DISPATCH),
    ("exact", "/api/v1/admin/schedules", DISPATCH),
    ("prefix", "/api/v1/admin/schedules/", DISPATCH),
    ("exact", "/console", CONSOLE),
    ("prefix", "/console/", CONSOLE),  # the web console, when one is configured
)

# Long polls: the request's `wait` is added to the upstream timeout (an agent's poll, and
# an operator following a command's output).
LONG_POLL_SUFFIXES = ("/commands", "/output")


def held_seconds(scope: dict, max_wait_s: int) -> int:
    """The seconds a request asks to be held (a poll's or an output follower's `wait`, at
    most the server's FLEETLINE_MAX_WAIT_S), added to its upstream timeout; 0 for anything
    else. Its validity is the service's to judge: only a short run of ASCII digits counts."""
    query = scope.get("query_string", b"")
    if b"wait=" not in query or scope["method"] != "GET" or not scope["path"].endswith(LONG_POLL_SUFFIXES):
        return 0
    wait = parse_qs(query.decode("latin-1")).get("wait", ["0"])[-1]
    return min(int(wait), max_wait_s) if wait.isascii() and wait.isdigit() and len(wait) <= 3 else 0


# The one body allowed past FLEETLINE_MAX_BODY_BYTES: an agent release's upload, up to
# FLEETLINE_MAX_RELEASE_BYTES (dispatch checks it is an admin's).
RELEASE_UPLOAD = "/api/v1/admin/agent-releases"
RELEASE_DOWNLOADS = "/api/v1/agent-releases/"


def route(path: str) -> str | None:
    for kind, pattern, service in ROUTES:
        if (kind == "exact" and path == pattern) or (kind == "prefix" and path.startswith(pattern)):
            return service
    return None
