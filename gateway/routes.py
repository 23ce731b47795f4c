"""The gateway's route table: every path of API.md, and which service owns it.

Checked in order; the first match wins. Anything else is the gateway's own 404.
"""

from __future__ import annotations

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
    ("prefix", "/api/v1/agents/", DISPATCH),  # /api/v1/agents/{id}/commands[...], keyset
    ("exact", "/api/v1/admin/commands", DISPATCH),
    ("prefix", "/api/v1/admin/commands/", DISPATCH),
    ("exact", "/api/v1/admin/command-keyset", DISPATCH),
    ("exact", "/api/v1/admin/approval-policy", DISPATCH),
    ("exact", "/api/v1/admin/jobs", DISPATCH),
    ("prefix", "/api/v1/admin/jobs/", DISPATCH),
    ("exact", "/console", CONSOLE),
    ("prefix", "/console/", CONSOLE),  # the web console, when one is configured
)

# Long polls: the request's `wait` is added to the upstream timeout (an agent's poll, and
# an operator following a command's output).
LONG_POLL_SUFFIXES = ("/commands", "/output")


def route(path: str) -> str | None:
    for kind, pattern, service in ROUTES:
        if (kind == "exact" and path == pattern) or (kind == "prefix" and path.startswith(pattern)):
            return service
    return None
