"""`fleetline jobs run|list|show|targets|cancel|wait`: one command on many agents.

`jobs run --label env=prod --type shell --params '{"command": "uptime"}' --max-in-flight 10
--max-failures 2 --wait` creates the job, then draws its progress (counts by status) on
stderr until every target is final; the exit status says whether every target succeeded.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable, TextIO

from fleetline import statuses
from fleetline.cli.admin_client import CliError
from fleetline.labels import split_label

# How a job shows its targets; the live ones first, then the ends.
LIVE = statuses.TARGET_LIVE
ENDS = statuses.TARGET_ENDS
JOB_COLUMNS = ["id", "status", "target_count", "succeeded", "failed", "live", "created_at"]
TARGET_COLUMNS = ["agent_id", "hostname", "status", "exit_code", "command_id"]


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        try:
            key, value = split_label(pair)
        except ValueError:
            raise CliError(f"--label takes key=value, not {pair!r}") from None
        labels[key] = value
    return labels


def target_options(p) -> None:
    """The flags selector() reads: a job's targets, and a schedule's at each run."""
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="target agents with this label (repeatable: all must match)")
    p.add_argument("--agent", action="append", default=[], metavar="ID", help="target this agent (repeatable)")
    p.add_argument("--all-active", action="store_true", help="target every active agent")
    p.add_argument("--where", metavar="EXPR",
                   help="target agents matching this, alone or with --label: "
                        "'facts.os.family = debian, facts.disk_free_gb < 5, labels.env in (prod, staging)'")


def selector(a) -> dict:
    if getattr(a, "where", None):
        if a.agent or a.all_active:
            raise CliError("--where combines only with --label")
        return {"where": a.where, **({"labels": _labels(a.label)} if a.label else {})}
    chosen = [bool(a.label), bool(a.agent), a.all_active]
    if sum(chosen) != 1:
        raise CliError("choose the targets with exactly one of --label (repeatable), --agent (repeatable), "
                       "--all-active, --where")
    if a.label:
        return {"labels": _labels(a.label)}
    if a.agent:
        return {"agent_ids": a.agent}
    return {"all_active": True}


def window(text: str | None) -> int | str | None:
    if text is None:
        return None
    if text.endswith("%") or not text.isdigit():
        return text  # the server says what is wrong with it, naming the field
    return int(text)


def job_request(a, command: dict) -> dict:
    return {"selector": selector(a), "command": command,
            "rollout": {"max_in_flight": window(a.max_in_flight), "max_failures": a.max_failures},
            "idempotency_key": a.idempotency_key, "dry_run": a.dry_run}


def finished(job: dict) -> bool:
    """Nothing more will change: the job stopped running and every target is final."""
    return job["status"] != "running" and not any(job["counts"][s] for s in LIVE)


def all_succeeded(job: dict) -> bool:
    return job["counts"]["succeeded"] == job["target_count"]


def progress(job: dict, width: int = 30) -> str:
    """One line: a bar of the final share, then every non-zero count (or, while the job
    awaits approval, who approved it so far)."""
    total = job["target_count"]
    if job["status"] == statuses.AWAITING:
        names = ", ".join(a["operator"]["name"] for a in job["approvals"])
        return (f"awaiting approval: {len(job['approvals'])} of {job['approvals_required']}"
                f"{f' ({names})' if names else ''}; {total} targets")
    final = sum(job["counts"][s] for s in ENDS)
    filled = width * final // total
    counts = " ".join(f"{s}={job['counts'][s]}" for s in (*LIVE, *ENDS) if job["counts"][s])
    return f"[{'#' * filled}{'.' * (width - filled)}] {final}/{total} {job['status']}  {counts}"


def follow(get: Callable[[], dict], timeout: float, out: TextIO = sys.stderr,
           interval: float = 0.5) -> dict:
    """Poll the job until finished(), drawing its progress: in place on a terminal, a new
    line whenever it changed otherwise."""
    deadline, last = time.monotonic() + timeout, None
    tty = out.isatty()
    while True:
        job = get()
        line = progress(job)
        if line != last:
            out.write(f"\r{line}\x1b[K" if tty else f"{line}\n")
            out.flush()
            last = line
        if finished(job):
            if tty:
                out.write("\n")
            return job
        if time.monotonic() > deadline:
            raise CliError(f"job {job['id']} is still {job['status']} after {timeout:.0f} s")
        time.sleep(interval)


def rows(result: Any) -> tuple[list[dict], list[str]] | None:
    """A listing as table rows, or None for a single object."""
    if isinstance(result, dict) and isinstance(result.get("jobs"), list):
        return [{**j, "succeeded": j["counts"]["succeeded"],
                 "failed": sum(j["counts"][s] for s in ("failed", "timed_out", "expired", "rejected")),
                 "live": sum(j["counts"][s] for s in LIVE)} for j in result["jobs"]], JOB_COLUMNS
    if isinstance(result, dict) and "target_count" in result and "counts" not in result:  # a dry run
        return result.get("targets") or [], ["agent_id", "hostname"]
    if isinstance(result, dict) and isinstance(result.get("targets"), list):
        return [{**t, "exit_code": (t["result"] or {}).get("exit_code")} for t in result["targets"]], TARGET_COLUMNS
    return None


def show(job: dict) -> dict:
    """A job as key/value lines: its counts on one line."""
    counts = " ".join(f"{s}={n}" for s, n in job["counts"].items() if n) or "-"
    return {**{k: v for k, v in job.items() if k != "counts"}, "counts": counts}


def dump(result: Any) -> str:
    return json.dumps(result, indent=2)
