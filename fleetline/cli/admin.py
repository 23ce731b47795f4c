"""Operator subcommands: `fleetline tokens|agents|commands|jobs ...` (and operators.py's
`whoami`, `operators`, `audit`), talking to the gateway.

Readable tables by default, `--json` for scripts; any refusal or unreachable server is one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from fleetline import statuses
from fleetline.cli import jobs as jobs_cli
from fleetline.cli import logs as logs_cli
from fleetline.cli import operators as operators_cli
from fleetline.cli import releases as releases_cli
from fleetline.cli import schedules as schedules_cli
from fleetline.cli import webhooks as webhooks_cli
from fleetline.cli.admin_client import Api, CliError
from fleetline.cli.tables import show as _show
from fleetline.cli.tables import table
from fleetline.private_files import write_private
from fleetline.settings import Settings, SettingsError
from fleetline.transport import InsecureTransport, check_url

FINAL = set(statuses.COMMAND_FINAL)


def _read_secret(path: str, what: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        # The path is not echoed: a token passed there by mistake must not be printed.
        raise CliError(f"cannot read the file {what} names: {exc.strerror}") from None


def _token(args: argparse.Namespace) -> str:
    """Who the CLI acts as, from a file or the environment, never from argv (`ps` shows argv
    to every user): --admin-token-file; your operator token, FLEETLINE_TOKEN (or
    FLEETLINE_TOKEN_FILE); the bootstrap token, FLEETLINE_ADMIN_TOKEN (or _FILE); else
    DATA_DIR/admin-token (what `fleetline up` made)."""
    if args.admin_token_file:
        return _read_secret(args.admin_token_file, "--admin-token-file")
    if os.environ.get("FLEETLINE_TOKEN"):
        return os.environ["FLEETLINE_TOKEN"].strip()
    if os.environ.get("FLEETLINE_TOKEN_FILE"):
        return _read_secret(os.environ["FLEETLINE_TOKEN_FILE"], "FLEETLINE_TOKEN_FILE")
    configured = Settings.from_env().admin_token  # FLEETLINE_ADMIN_TOKEN or its _FILE
    if configured:
        return configured
    path = Path(args.data_dir) / "admin-token"
    try:
        return path.read_text().strip()
    except OSError:
        raise CliError(f"no token: set FLEETLINE_TOKEN_FILE (your operator token), pass --admin-token-file, "
                       f"set FLEETLINE_ADMIN_TOKEN(_FILE), or run "
                       f"`fleetline up` to create {path}") from None


# --- handlers -------------------------------------------------------------------------------

TOKEN_COLUMNS = ["id", "uses", "max_uses", "expires_at", "revoked_at", "note"]
AGENT_COLUMNS = ["id", "hostname", "machine_id", "status", "agent_version", "last_seen_at"]
COMMAND_COLUMNS = ["id", "agent_id", "type", "status", "retry_count", "created_at", "finished_at"]


def tokens_create(api: Api, a) -> Any:
    created = api.call("POST", "/api/v1/admin/registration-tokens",
                       json={"max_uses": a.max_uses, "expires_in_s": a.expires_in, "note": a.note})
    token_file = a.token_file or "/etc/fleetline-agent/registration-token"
    if a.token_file:
        # For provisioning (compose's enroll job): the secret goes to a 0600 file only.
        write_private(a.token_file, created["token"] + "\n")
        created = {**created, "token": f"(written to {a.token_file})"}
    # What enrols a machine with it, first contact included (like kubeadm's discovery hash).
    out = {**created, "agent_command": agent_command(api.url, token_file, created.get("root_key_sha256"),
                                                      a.ca_file)}
    # And, once a release was uploaded, the one line that installs the agent there too.
    token_line = (f"cp {shlex.quote(a.token_file)} \"$d/token\"" if a.token_file
                  else f"(umask 077; printf '%s\\n' {shlex.quote(created['token'])} > \"$d/token\")")
    agent_args = ["--server", api.url]
    if created.get("root_key_sha256"):
        agent_args += ["--root-key-sha256", created["root_key_sha256"]]
    if a.ca_file:
        agent_args += ["--ca-file", a.ca_file]
    releases = api.call("GET", "/api/v1/admin/agent-releases")["releases"]
    lines = releases_cli.install_lines(releases, api.url, token_line, agent_args)
    return {**out, "install_commands": lines} if lines else out


def agent_command(url: str, token_file: str, root_key_sha256: str | None, ca_file: str | None) -> str:
    """The command line that enrols an agent with a registration token kept in `token_file`
    (the secret never goes on a command line)."""
    parts = ["fleetline-agent", "--server", url, "--registration-token-file", token_file]
    if root_key_sha256:
        parts += ["--root-key-sha256", root_key_sha256]
    if ca_file:
        parts += ["--ca-file", ca_file]
    return " ".join(shlex.quote(p) for p in parts)


def tokens_list(api: Api, a) -> Any:
    return api.call("GET", "/api/v1/admin/registration-tokens")


def tokens_revoke(api: Api, a) -> Any:
    api.call("DELETE", f"/api/v1/admin/registration-tokens/{a.id}")
    return {"revoked": a.id}


def _paging(a) -> dict:
    """A listing's query: the filters and paging flags given, and nothing else."""
    query = {"status": a.status, "limit": a.limit, "before": a.before, "agent_id": getattr(a, "agent", None),
             "where": getattr(a, "where", None)}
    return {k: v for k, v in query.items() if v}


def agents_list(api: Api, a) -> Any:
    return api.call("GET", "/api/v1/admin/agents", params=_paging(a))


def agents_show(api: Api, a) -> Any:
    return api.call("GET", f"/api/v1/admin/agents/{a.id}")


def agents_label(api: Api, a) -> Any:
    """`k=v` sets an operator label, `k-` removes one."""
    changes: dict[str, str | None] = {}
    for item in a.changes:
        if item.endswith("-") and "=" not in item:
            changes[item[:-1]] = None
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"labels are key=value to set or key- to remove, not {item!r}")
        changes[key] = value
    return api.call("PATCH", f"/api/v1/admin/agents/{a.id}", json={"labels": changes})


def agents_refresh_facts(api: Api, a) -> Any:
    return api.call("POST", f"/api/v1/admin/agents/{a.id}/refresh-facts")


def agents_revoke(api: Api, a) -> Any:
    api.call("DELETE", f"/api/v1/admin/agents/{a.id}")
    return {"revoked": a.id}


def _wait_final(api: Api, command_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        cmd = api.call("GET", f"/api/v1/admin/commands/{command_id}")
        if cmd["status"] in FINAL:
            return cmd
        if time.monotonic() > deadline:
            raise CliError(f"command {command_id} is still {cmd['status']} after {timeout:.0f} s")
        time.sleep(0.5)


def _command(a) -> dict:
    """The command settings shared by `commands send` and `jobs run`."""
    try:
        params = json.loads(a.params)
    except ValueError:
        raise CliError("--params must be a JSON object") from None
    return {"type": a.type, "params": params, "priority": a.priority, "ttl_s": a.ttl,
            "max_retries": a.max_retries, "ack_timeout_s": a.ack_timeout, "run_timeout_s": a.run_timeout}


def commands_send(api: Api, a) -> Any:
    body = {"agent_id": a.agent, **_command(a), "idempotency_key": a.idempotency_key}
    cmd = api.call("POST", "/api/v1/admin/commands", json=body)
    return _wait_final(api, cmd["id"], a.timeout) if a.wait else cmd


def commands_list(api: Api, a) -> Any:
    return api.call("GET", "/api/v1/admin/commands", params=_paging(a))


def commands_show(api: Api, a) -> Any:
    return api.call("GET", f"/api/v1/admin/commands/{a.id}")


def commands_cancel(api: Api, a) -> Any:
    return api.call("POST", f"/api/v1/admin/commands/{a.id}/cancel")


def commands_wait(api: Api, a) -> Any:
    return _wait_final(api, a.id, a.timeout)


def jobs_run(api: Api, a) -> Any:
    return _run_job(api, a, jobs_cli.job_request(a, _command(a)))


def _run_job(api: Api, a, request: dict) -> Any:
    """A job created (or counted, for a dry run), followed to its end with --wait."""
    job = api.call("POST", "/api/v1/admin/jobs", json=request)
    if a.wait and not a.dry_run:
        return jobs_cli.follow(lambda: api.call("GET", f"/api/v1/admin/jobs/{job['id']}"), a.timeout)
    return job


def jobs_list(api: Api, a) -> Any:
    return api.call("GET", "/api/v1/admin/jobs", params=_paging(a))


def jobs_show(api: Api, a) -> Any:
    return api.call("GET", f"/api/v1/admin/jobs/{a.id}")


def jobs_targets(api: Api, a) -> Any:
    return api.call("GET", f"/api/v1/admin/jobs/{a.id}/targets", params=_paging(a))


def jobs_cancel(api: Api, a) -> Any:
    return api.call("POST", f"/api/v1/admin/jobs/{a.id}/cancel")


def _decision(a) -> dict:
    return {"comment": a.comment}


def jobs_approve(api: Api, a) -> Any:
    return api.call("POST", f"/api/v1/admin/jobs/{a.id}/approve", json=_decision(a))


def jobs_deny(api: Api, a) -> Any:
    return api.call("POST", f"/api/v1/admin/jobs/{a.id}/deny", json=_decision(a))


def commands_approve(api: Api, a) -> Any:
    return api.call("POST", f"/api/v1/admin/commands/{a.id}/approve", json=_decision(a))


def commands_deny(api: Api, a) -> Any:
    return api.call("POST", f"/api/v1/admin/commands/{a.id}/deny", json=_decision(a))


def approvals_list(api: Api, a) -> Any:
    """Every job and command awaiting approval (one page of each, newest first)."""
    waiting = {"status": "awaiting_approval", "limit": 1000}
    found = api.call("GET", "/api/v1/admin/jobs", params=waiting)["jobs"]
    single = [c for c in api.call("GET", "/api/v1/admin/commands", params=waiting)["commands"] if not c["job_id"]]
    return {"awaiting": [
        *({"kind": "job", "id": j["id"], "type": j["command"]["type"], "targets": j["target_count"],
           "created_by": (j["created_by"] or {}).get("name"), "approvals": f"{len(j['approvals'])}/{j['approvals_required']}",
           "created_at": j["created_at"]} for j in found),
        *({"kind": "command", "id": c["id"], "type": c["type"], "targets": 1,
           "created_by": (c["created_by"] or {}).get("name"), "approvals": f"{len(c['approvals'])}/{c['approvals_required']}",
           "created_at": c["created_at"]} for c in single)]}


def approvals_policy(api: Api, a) -> Any:
    if a.file is None:
        return api.call("GET", "/api/v1/admin/approval-policy")
    try:
        policy = json.loads(sys.stdin.read() if a.file == "-" else Path(a.file).read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"--file must hold the policy as JSON: {exc}") from None
    return api.call("PUT", "/api/v1/admin/approval-policy", json=policy)


def jobs_wait(api: Api, a) -> Any:
    return jobs_cli.follow(lambda: api.call("GET", f"/api/v1/admin/jobs/{a.id}"), a.timeout)


# How each result is printed as a table (key in the body, columns); others as key/value.
LISTINGS = {"tokens": TOKEN_COLUMNS, "agents": AGENT_COLUMNS, "commands": COMMAND_COLUMNS,
            "awaiting": ["kind", "id", "type", "targets", "created_by", "approvals", "created_at"],
            "operators": operators_cli.OPERATOR_COLUMNS, "operator_tokens": operators_cli.OPERATOR_TOKEN_COLUMNS,
            "releases": releases_cli.RELEASE_COLUMNS}


def _render(result: Any, as_json: bool) -> str:
    if as_json:
        return json.dumps(result, indent=2)
    listing = jobs_cli.rows(result) or schedules_cli.rows(result) or webhooks_cli.rows(result)
    if listing is not None:
        text = table(*listing)
        if "target_count" in result and "counts" not in result:  # a dry run: how many, then the first
            shown = len(result.get("targets") or [])
            return f"{result['target_count']} targets" + (f" (the first {shown}):" if shown else "") + "\n" + text
        flag = "--after" if "schedules" in result else "--before"  # schedules page by name
        return text + (f"\n(more: {flag} {result['next']})" if result.get("next") else "")
    if isinstance(result, dict) and isinstance(result.get("counts"), dict):  # a job
        return _show(jobs_cli.show(result))
    if isinstance(result, dict) and isinstance(result.get("events"), list) and "url" not in result:  # the audit trail
        result = {**result, "audit": operators_cli.audit_rows(result["events"])}
        text = table(result["audit"], operators_cli.AUDIT_COLUMNS)
        return text + (f"\n(more: --before {result['next']})" if result.get("next") else "")
    if isinstance(result, dict) and "cancel_requested_at" in result:  # one command
        result = {**result, "status": statuses.shown(result)}
    for key, columns in LISTINGS.items():
        if isinstance(result, dict) and isinstance(result.get(key), list):
            rows = result[key]
            if key == "commands":
                rows = [{**c, "status": statuses.shown(c)} for c in rows]
            text = table(rows, columns)
            if result.get("next"):
                text += f"\n(more: --before {result['next']})"
            return text
    return _show(result)


def _exit_code(result: Any) -> int:
    """A waited-for command that did not succeed, or a waited-for job where any target did
    not, is a failure for scripts."""
    if isinstance(result, dict) and isinstance(result.get("counts"), dict):
        return 0 if jobs_cli.all_succeeded(result) else 1
    if isinstance(result, dict) and result.get("status") in FINAL - {"succeeded"}:
        return 1
    return 0


def _run(handler):
    def run(args: argparse.Namespace) -> int:
        try:
            check_url(args.url, allow_plaintext=args.insecure_http)
            api = Api(args.url, _token(args), ca_file=args.ca_file)
            result = handler(api, args)
        except (CliError, SettingsError, OSError, InsecureTransport) as exc:
            print(f"fleetline: {exc}", file=sys.stderr)
            return 1
        if result is None:  # it printed as it went (audit --follow)
            return 0
        print(_render(result, args.json))
        if handler is tokens_create and not args.json:
            print("\nTo enrol a machine, put the token in the file --registration-token-file names "
                  "(mode 0600, root only; never on a command line), then run there:\n  "
                  + result["agent_command"])
            for platform, line in (result.get("install_commands") or {}).items():
                print(f"\nOr install the agent and enrol in one line, as root on a {platform} machine with "
                      f"Python 3.9 or newer:\n  {line}")
        waited = getattr(args, "wait", False) or handler in (commands_wait, jobs_wait)
        return _exit_code(result) if waited else 0

    return run


def add_parsers(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("FLEETLINE_URL", "http://127.0.0.1:8080"),
                        help="the gateway [FLEETLINE_URL]")
    common.add_argument("--admin-token-file", help="a file holding your operator token or the bootstrap token "
                        "[FLEETLINE_TOKEN(_FILE), else FLEETLINE_ADMIN_TOKEN(_FILE), else DATA_DIR/admin-token]")
    common.add_argument("--ca-file", default=os.environ.get("FLEETLINE_CA_FILE") or None,
                        help="the CA that signed the gateway's certificate [FLEETLINE_CA_FILE; "
                             "the system trust store]")
    common.add_argument("--insecure-http", action="store_true",
                        default=os.environ.get("FLEETLINE_INSECURE_HTTP", "") in ("1", "true", "yes"),
                        help="allow plain http:// to a non-loopback gateway [FLEETLINE_INSECURE_HTTP]")
    common.add_argument("--data-dir", default=".fleetline")
    common.add_argument("--json", action="store_true", help="print the API's JSON")

    def group(name: str, help_text: str):
        return sub.add_parser(name, help=help_text).add_subparsers(dest="action", required=True)

    def cmd(parent, name: str, handler, help_text: str):
        p = parent.add_parser(name, parents=[common], help=help_text)
        p.set_defaults(func=_run(handler))
        return p

    def decisions(parent, what: str, approve, deny) -> None:
        for name, handler, text in (("approve", approve, f"approve a {what} awaiting approval (not your own)"),
                                    ("deny", deny, f"deny a {what} awaiting approval")):
            p = cmd(parent, name, handler, text)
            p.add_argument("id")
            p.add_argument("--comment", default="", help="why (kept with the decision)")

    def listing(parent, name: str, handler, help_text: str, statuses: list[str] | None = None):
        """A listing: its status filter and the paging flags _paging() reads."""
        p = cmd(parent, name, handler, help_text)
        p.add_argument("--status", choices=statuses)
        p.add_argument("--limit", type=int)
        p.add_argument("--before", help="the cursor a previous page printed")
        return p

    tokens = group("tokens", "registration tokens")
    p = cmd(tokens, "create", tokens_create, "create a registration token (the secret is shown once)")
    p.add_argument("--max-uses", type=int, default=1)
    p.add_argument("--expires-in", type=int, default=86400, help="seconds")
    p.add_argument("--note", default="")
    p.add_argument("--token-file", help="write the secret to this file (0600) instead of printing it")
    cmd(tokens, "list", tokens_list, "list registration tokens")
    cmd(tokens, "revoke", tokens_revoke, "revoke a registration token").add_argument("id")

    agents = group("agents", "registered agents")
    listing(agents, "list", agents_list, "list agents", list(statuses.AGENT_STATUSES)).add_argument(
        "--where", metavar="EXPR", help="only agents matching this: 'facts.os.family = debian, labels.env = prod'")
    cmd(agents, "show", agents_show, "show one agent").add_argument("id")
    cmd(agents, "revoke", agents_revoke, "revoke an agent").add_argument("id")
    p = cmd(agents, "label", agents_label, "set (k=v) and remove (k-) operator labels")
    p.add_argument("id")
    p.add_argument("changes", nargs="+", metavar="k=v|k-")
    cmd(agents, "refresh-facts", agents_refresh_facts, "ask an agent for fresh facts now").add_argument("id")

    def command_settings(p) -> None:
        p.add_argument("--type", required=True)
        p.add_argument("--params", default="{}", help="JSON object")
        p.add_argument("--priority", type=int, default=0)
        p.add_argument("--ttl", type=int, default=14400)
        p.add_argument("--max-retries", type=int, default=5)
        p.add_argument("--ack-timeout", type=int, default=300)
        p.add_argument("--run-timeout", type=int, default=3600)
        p.add_argument("--idempotency-key")
        p.add_argument("--timeout", type=float, default=600, help="seconds to wait")

    commands = group("commands", "commands for agents")
    p = cmd(commands, "send", commands_send, "queue a command for an agent")
    p.add_argument("--agent", required=True, help="agent id")
    command_settings(p)
    p.add_argument("--wait", action="store_true", help="wait for the final status; non-zero unless succeeded")
    listing(commands, "list", commands_list, "list commands, newest first").add_argument("--agent")
    cmd(commands, "show", commands_show, "show one command").add_argument("id")
    cmd(commands, "cancel", commands_cancel, "cancel a command").add_argument("id")
    p = cmd(commands, "wait", commands_wait, "wait for a command's final status")
    p.add_argument("id")
    p.add_argument("--timeout", type=float, default=600)
    decisions(commands, "command", commands_approve, commands_deny)

    operators_cli.add_parsers(sub, group, cmd)

    jobs = group("jobs", "one command on many agents")
    p = cmd(jobs, "run", jobs_run, "run a command on every agent a selector matches")
    jobs_cli.target_options(p)
    command_settings(p)
    p.add_argument("--max-in-flight", metavar="N|N%", help="at most this many delivered and not final")
    p.add_argument("--max-failures", type=int, help="halt once more targets than this fail")
    p.add_argument("--dry-run", action="store_true", help="only count the targets")
    p.add_argument("--wait", action="store_true",
                   help="show progress until every target is final; non-zero unless all succeeded")
    listing(jobs, "list", jobs_list, "list jobs, newest first", list(statuses.JOB_STATUSES))
    cmd(jobs, "show", jobs_show, "show one job and its counts").add_argument("id")
    listing(jobs, "targets", jobs_targets, "a job's targets and their commands").add_argument("id")
    cmd(jobs, "cancel", jobs_cancel, "cancel a job: its undelivered commands too").add_argument("id")
    p = cmd(jobs, "wait", jobs_wait, "show a job's progress until every target is final")
    p.add_argument("id")
    p.add_argument("--timeout", type=float, default=600)
    decisions(jobs, "job", jobs_approve, jobs_deny)
    logs_cli.add_parsers(commands, jobs, cmd)
    schedules_cli.add_parsers(group, cmd, decisions, command_settings, _command)
    releases_cli.add_parsers(group, cmd, _run_job, agents)
    webhooks_cli.add_parsers(group, cmd)

    approvals = group("approvals", "requests awaiting a second operator's approval")
    cmd(approvals, "list", approvals_list, "jobs and commands awaiting approval")
    p = cmd(approvals, "policy", approvals_policy, "show the approval policy, or set it (admin) from --file")
    p.add_argument("--file", help='the policy as JSON, - for stdin: {"rules": [{"command_types": ["shell"]}], '
                                  '"approvals": 1, "expires_in_s": 86400}')
