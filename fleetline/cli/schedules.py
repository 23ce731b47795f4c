"""`fleetline schedules create|list|show|runs|pause|resume|delete|run-now|approve|deny`:
jobs that recur, from the command line (docs/api.md, schedules)."""

from __future__ import annotations

from typing import Any, Callable

from fleetline.cli import jobs as jobs_cli
from fleetline.cli.admin_client import Api, CliError

SCHEDULE_COLUMNS = ["id", "name", "status", "when", "next_run_at", "last_run", "paused_reason"]
RUN_COLUMNS = ["scheduled_for", "outcome", "job_id", "detail"]


def _when(s: dict) -> str:
    if s.get("cron"):
        return f"{s['cron']} ({s['timezone']})"
    return f"every {s['interval_s']} s"


def rows(result: Any) -> tuple[list[dict], list[str]] | None:
    """How a schedules answer prints as a table (None: it is not one)."""
    if isinstance(result, dict) and isinstance(result.get("schedules"), list):
        return [{**s, "when": _when(s), "last_run": _last(s)} for s in result["schedules"]], SCHEDULE_COLUMNS
    if isinstance(result, dict) and isinstance(result.get("runs"), list):
        return result["runs"], RUN_COLUMNS
    return None


def _last(s: dict) -> str | None:
    last = s.get("last_run")
    if not last:
        return None
    job = f" job {last['job_id'][:8]} {last.get('job_status') or ''}".rstrip() if last.get("job_id") else ""
    return f"{last['scheduled_for']} {last['outcome']}{job}"


def _path(a, tail: str = "") -> str:
    return f"/api/v1/admin/schedules/{a.id}{tail}"


def _timing(a) -> dict:
    if (a.cron is None) == (a.every is None):
        raise CliError("give exactly one of --cron 'EXPR' and --every SECONDS")
    return {"cron": a.cron, "timezone": a.tz, "interval_s": a.every}


def create(command_of: Callable[[Any], dict]) -> Callable[[Api, Any], Any]:
    def handler(api: Api, a) -> Any:
        body = {"name": a.name, "selector": jobs_cli.selector(a), "command": command_of(a),
                "rollout": {"max_in_flight": jobs_cli.window(a.max_in_flight), "max_failures": a.max_failures},
                **_timing(a), "overlap": a.overlap, "catch_up": a.catch_up, "enabled": not a.paused}
        return api.call("POST", "/api/v1/admin/schedules", json=body)
    return handler


def list_(api: Api, a) -> Any:
    params = {k: v for k, v in {"limit": a.limit, "after": a.after}.items() if v}
    return api.call("GET", "/api/v1/admin/schedules", params=params)


def show(api: Api, a) -> Any:
    return api.call("GET", _path(a))


def runs(api: Api, a) -> Any:
    params = {k: v for k, v in {"limit": a.limit, "before": a.before}.items() if v}
    return api.call("GET", _path(a, "/runs"), params=params)


def pause(api: Api, a) -> Any:
    return api.call("PATCH", _path(a), json={"enabled": False})


def resume(api: Api, a) -> Any:
    return api.call("PATCH", _path(a), json={"enabled": True})


def delete(api: Api, a) -> Any:
    api.call("DELETE", _path(a))
    return {"deleted": a.id}


def run_now(api: Api, a) -> Any:
    return api.call("POST", _path(a, "/run-now"))


def approve(api: Api, a) -> Any:
    return api.call("POST", _path(a, "/approve"), json={"comment": a.comment})


def deny(api: Api, a) -> Any:
    return api.call("POST", _path(a, "/deny"), json={"comment": a.comment})


def add_parsers(group, cmd, decisions, command_settings, command_of) -> None:
    """The helpers are admin.py's: parser groups and commands, a command's flags and body."""
    sched = group("schedules", "jobs that recur")
    p = cmd(sched, "create", create(command_of), "a job on a selector at every tick")
    p.add_argument("--name", required=True)
    p.add_argument("--cron", help="'30 2 * * 1-5', or @hourly, @daily, @weekly, @monthly")
    p.add_argument("--tz", default="UTC", help="the cron's IANA time zone (default UTC)")
    p.add_argument("--every", type=int, metavar="SECONDS", help="an interval instead of a cron")
    jobs_cli.target_options(p)
    command_settings(p)
    p.add_argument("--max-in-flight", metavar="N|N%", help="at most this many delivered and not final")
    p.add_argument("--max-failures", type=int, help="halt a run's job once more targets than this fail")
    p.add_argument("--overlap", choices=["skip", "allow"], default="skip",
                   help="a tick whose previous job still runs: skip it (default) or start anyway")
    p.add_argument("--catch-up", choices=["skip", "latest"], default="skip",
                   help="ticks missed while paused or down: skip them (default) or run the latest at once")
    p.add_argument("--paused", action="store_true", help="create it paused")
    p = cmd(sched, "list", list_, "list schedules by name")
    p.add_argument("--limit", type=int)
    p.add_argument("--after", help="the name a previous page printed")
    cmd(sched, "show", show, "show one schedule").add_argument("id")
    p = cmd(sched, "runs", runs, "a schedule's runs, newest first")
    p.add_argument("id")
    p.add_argument("--limit", type=int)
    p.add_argument("--before", help="the cursor a previous page printed")
    cmd(sched, "pause", pause, "pause a schedule").add_argument("id")
    cmd(sched, "resume", resume, "resume a schedule (missed ticks follow its catch-up)").add_argument("id")
    cmd(sched, "delete", delete, "delete a schedule (the jobs it started run on)").add_argument("id")
    cmd(sched, "run-now", run_now, "start a job now, as a tick would").add_argument("id")
    decisions(sched, "schedule", approve, deny)
