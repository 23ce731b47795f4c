"""`fleetline commands logs ID [--follow]` and `fleetline jobs logs ID --agent AGENT_ID`: a
command's output as the agent streams it, printed as it arrives. The output came from a
machine: control characters are escaped (tables.safe_lines) before a terminal sees them."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from fleetline.cli.admin_client import Api, CliError
from fleetline.cli.tables import safe_lines

HOLD_S = 30  # each held read; the request's timeout leaves room for it


def print_output(api: Api, command_id: str, follow: bool, out: TextIO = sys.stdout,
                 err: TextIO = sys.stderr) -> None:
    """Everything stored so far, then (with follow) what arrives, until the command ends."""
    offset = 0
    while True:
        page = api.call("GET", f"/api/v1/admin/commands/{command_id}/output",
                        params={"offset": offset, "wait": HOLD_S if follow else 0}, timeout=HOLD_S + 30)
        out.write(safe_lines(page["data"]))
        out.flush()
        moved, offset = page["next_offset"] != offset, page["next_offset"]
        if page["complete"] or (not follow and not moved):
            break
    if page["truncated"]:
        err.write(f"[the output was cut at {offset} bytes; the result keeps its last 64 KiB: "
                  f"fleetline commands show {command_id}]\n")


def commands_logs(api: Api, a) -> Any:
    print_output(api, a.id, a.follow)
    return None


def job_command(api: Api, job_id: str, agent_id: str) -> str:
    """The id of the job's command for that agent (its newest commands, a page at a time)."""
    before = None
    for _ in range(20):
        page = api.call("GET", "/api/v1/admin/commands",
                        params={k: v for k, v in {"agent_id": agent_id, "limit": 1000, "before": before}.items() if v})
        for command in page["commands"]:
            if command.get("job_id") == job_id:
                return command["id"]
        before = page.get("next")
        if not before:
            break
    raise CliError(f"job {job_id} has no command for agent {agent_id}")


def jobs_logs(api: Api, a) -> Any:
    print_output(api, job_command(api, a.id, a.agent), a.follow)
    return None


def add_parsers(commands, jobs, cmd) -> None:
    p = cmd(commands, "logs", commands_logs, "print a command's output (live with --follow)")
    p.add_argument("id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing as it arrives, until the command ends")
    p = cmd(jobs, "logs", jobs_logs, "print the output of a job's command on one agent")
    p.add_argument("id")
    p.add_argument("--agent", required=True, metavar="AGENT_ID")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing as it arrives, until the command ends")
