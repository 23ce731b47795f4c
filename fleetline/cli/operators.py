"""Operator subcommands for people: `fleetline whoami`, `fleetline operators ...` (admins;
an operator its own tokens, as `me`), and `fleetline audit [--follow]` (admins).

Passwords and token secrets never go through argv: a password is read from a file
(`--password-file`, or `-` for stdin) and a new token's secret is printed once, or written
to a 0600 file with `--token-file`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from fleetline.cli.admin_client import Api, CliError
from fleetline.cli.tables import table
from fleetline.labels import split_label
from fleetline.private_files import write_private

OPERATOR_COLUMNS = ["id", "name", "role", "scope", "email", "disabled_at"]
OPERATOR_TOKEN_COLUMNS = ["id", "note", "created_at", "expires_at", "last_used_at", "revoked_at"]
AUDIT_COLUMNS = ["at", "actor", "action", "target", "outcome", "source_ip"]
FOLLOW_EVERY_S = 2.0


def operator_id(api: Api, given: str) -> str:
    """An operator named by id, by name, or `me`."""
    if given == "me":
        return api.call("GET", "/api/v1/admin/whoami")["id"]
    if len(given) == 36 and given.count("-") == 4:
        return given
    for operator in api.call("GET", "/api/v1/admin/operators")["operators"]:
        if operator["name"] == given:
            return operator["id"]
    raise CliError(f"no operator named {given!r}")


def _password(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read the password file: {exc.strerror}") from None
    return text.rstrip("\n")


def _scope(a) -> dict | None:
    if not a.label and not a.command_type:
        return None
    try:
        labels = dict(split_label(pair) for pair in a.label)
    except ValueError as exc:
        raise CliError(f"--label: {exc}") from None
    return {"labels": labels, "command_types": a.command_type or ["*"]}


# --- handlers ----------------------------------------------------------------------------------


def whoami(api: Api, a) -> Any:
    return api.call("GET", "/api/v1/admin/whoami")


def operators_add(api: Api, a) -> Any:
    body = {"name": a.name, "role": a.role, "scope": _scope(a) or {"labels": {}, "command_types": ["*"]},
            "email": a.email, "password": _password(a.password_file)}
    return api.call("POST", "/api/v1/admin/operators", json=body)


def operators_list(api: Api, a) -> Any:
    return api.call("GET", "/api/v1/admin/operators")


def operators_show(api: Api, a) -> Any:
    return api.call("GET", f"/api/v1/admin/operators/{operator_id(api, a.operator)}")


def operators_update(api: Api, a) -> Any:
    body: dict[str, Any] = {}
    if a.role:
        body["role"] = a.role
    if (scope := _scope(a)) is not None:
        body["scope"] = scope
    if a.email is not None:
        body["email"] = a.email or None
    if a.password_file:
        body["password"] = _password(a.password_file)
    if a.disable or a.enable:
        body["disabled"] = bool(a.disable)
    if not body:
        raise CliError("nothing to change: give --role, --label/--command-type, --email, --password-file, "
                       "--disable or --enable")
    return api.call("PATCH", f"/api/v1/admin/operators/{operator_id(api, a.operator)}", json=body)


def token_create(api: Api, a) -> Any:
    made = api.call("POST", f"/api/v1/admin/operators/{operator_id(api, a.operator)}/tokens",
                    json={"expires_in_s": a.expires_in, "note": a.note})
    if a.token_file:
        write_private(a.token_file, made["token"] + "\n")
        made = {**made, "token": f"(written to {a.token_file})"}
    return made


def token_list(api: Api, a) -> Any:
    found = api.call("GET", f"/api/v1/admin/operators/{operator_id(api, a.operator)}/tokens")
    return {"operator_tokens": found["tokens"]}


def token_revoke(api: Api, a) -> Any:
    api.call("DELETE", f"/api/v1/admin/operator-tokens/{a.id}")
    return {"revoked": a.id}


def _audit_query(a) -> dict:
    query = {"actor": a.actor, "action": a.action, "target_id": a.target, "since": a.since, "limit": a.limit,
             "before": a.before}
    return {k: v for k, v in query.items() if v}


def audit(api: Api, a) -> Any:
    if a.follow:
        audit_follow(api, a)
        return None
    return api.call("GET", "/api/v1/admin/audit", params=_audit_query(a))


def audit_rows(events: list[dict]) -> list[dict]:
    return [{"at": e["at"], "actor": f"{e['actor']['name']} ({e['actor']['type']})", "action": e["action"],
             "target": f"{e['target']['type']} {e['target']['id']}" if e.get("target") else None,
             "outcome": e["outcome"], "source_ip": e.get("source_ip")} for e in events]


def audit_follow(api: Api, a) -> None:
    """Print the newest events, then each new one as it lands (oldest first), until Ctrl-C."""
    def emit(events: list[dict]) -> None:
        if a.json:
            for e in events:
                print(json.dumps(e), flush=True)
            return
        lines = table(audit_rows(events), AUDIT_COLUMNS).splitlines()
        print("\n".join(lines if not seen else lines[1:]), flush=True)

    seen: set[str] = set()
    query = {**_audit_query(a), "limit": 1000}
    query.pop("before", None)
    try:
        while True:
            events = api.call("GET", "/api/v1/admin/audit", params=query)["events"]
            fresh = [e for e in reversed(events) if e["id"] not in seen]
            if fresh:
                emit(fresh)
                seen.update(e["id"] for e in fresh)
                query["since"] = fresh[-1]["at"]  # the listing is inclusive: `seen` drops the repeat
            time.sleep(FOLLOW_EVERY_S)
    except KeyboardInterrupt:
        return


def add_parsers(sub, group, cmd) -> None:
    """`group(name, help)` and `cmd(parent, name, handler, help)` are admin.py's."""
    cmd(sub, "whoami", whoami, "who the token you use is")

    ops = group("operators", "operators, their roles, scopes and tokens")
    p = cmd(ops, "add", operators_add, "add an operator")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    _scope_options(p)
    p.add_argument("--email", help="for single sign-on to the console")
    p.add_argument("--password-file", help="a file holding its console password (- for stdin)")
    cmd(ops, "list", operators_list, "list operators")
    cmd(ops, "show", operators_show, "show one operator (id, name or me)").add_argument("operator")
    p = cmd(ops, "update", operators_update, "change an operator's role, scope, email or password; disable it")
    p.add_argument("operator", help="id or name")
    p.add_argument("--role", choices=["viewer", "operator", "admin"])
    _scope_options(p)
    p.add_argument("--email", help="its email ('' removes it)")
    p.add_argument("--password-file", help="a file holding its new password (- for stdin)")
    p.add_argument("--disable", action="store_true", help="end its sessions and tokens, refuse it from now on")
    p.add_argument("--enable", action="store_true")

    tokens = ops.add_parser("token", help="an operator's tokens (yours: `me`)").add_subparsers(
        dest="token_action", required=True)
    p = cmd(tokens, "create", token_create, "a new token (the secret is shown once)")
    p.add_argument("operator", help="id, name or me")
    p.add_argument("--expires-in", type=int, default=2592000, help="seconds [30 days]")
    p.add_argument("--note", default="")
    p.add_argument("--token-file", help="write the secret to this file (0600) instead of printing it")
    cmd(tokens, "list", token_list, "its tokens, without secrets").add_argument("operator", help="id, name or me")
    cmd(tokens, "revoke", token_revoke, "revoke a token").add_argument("id")

    p = cmd(sub, "audit", audit, "the audit trail, newest first (admins)")
    p.add_argument("--actor", help="an operator's name or id")
    p.add_argument("--action", help="e.g. command.create")
    p.add_argument("--target", help="a target's id")
    p.add_argument("--since", help="an RFC 3339 time")
    p.add_argument("--limit", type=int)
    p.add_argument("--before", help="the cursor a previous page printed")
    p.add_argument("--follow", action="store_true", help="then print new events as they land, until Ctrl-C")


def _scope_options(p) -> None:
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="scope: only agents with this label (repeatable)")
    p.add_argument("--command-type", action="append", default=[], metavar="TYPE",
                   help="scope: a command type it may queue (repeatable; default all)")
