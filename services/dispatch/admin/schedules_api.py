"""Schedule endpoints of dispatch (docs/api.md, schedules): create, list, read, change,
delete, their runs, run-now, approve and deny. Handlers parse, call schedules.py (or
approvals.py), render."""

from __future__ import annotations

import uuid
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fleetline.ethos import Log
from services.common.errors import invalid
from services.common.paging import decode_cursor, encode_cursor
from services.common.validation import (
    Bool,
    Int,
    Str,
    nullable,
    path_id,
    printable,
    query_int,
    read_json_object,
    take,
)
from services.dispatch import state as dispatch_state
from services.dispatch.admin.approvals_api import _comment
from services.dispatch.admin.commands_api import read_command
from services.dispatch.admin.jobs_api import _object, read_rollout, read_selector
from services.dispatch.lifecycle import approvals, jobs, schedules
from services.dispatch.lifecycle import schedule_rules as rules
from services.dispatch.views import job_view, run_view, schedule_view

_log = Log("dispatch", "schedules")
NAME = printable(128, 1)
FIELDS = ("name", "selector", "command", "rollout", "cron", "timezone", "interval_s", "overlap", "catch_up",
          "enabled")


def _timing(longest: int, usable: Callable[[str], object]) -> Callable[[Any, str], str]:
    """A cron expression or a zone: text the rules can use (they say why not)."""
    def check(value: Any, name: str) -> str:
        text = Str(1, longest)(value, name).strip()
        try:
            usable(text)
        except rules.BadTiming as exc:
            raise invalid(f"{exc}.", name) from None
        return text
    return check


_cron, _timezone = _timing(256, rules.expression), _timing(64, rules.zone)


def _read(body: dict, old: schedules.Spec | None = None) -> tuple[schedules.Spec, list[str]]:
    """The schedule a body describes (over `old`, for a PATCH), and the fields it gave."""
    unknown = sorted(set(body) - set(FIELDS))
    if old is not None and unknown:
        raise invalid(f"{unknown[0]} is not a field of a schedule.", unknown[0])
    given = [f for f in FIELDS if f in body]
    base = old.__dict__ if old is not None else {}

    def field(name: str, check: Any, default: Any = None) -> Any:
        """Given: checked (null is the default); absent: as it was (a PATCH) or the default."""
        fallback = base[name] if old is not None else default
        if name in body:
            return take(body, name, check) if fallback is ... else take(body, name, check, fallback)
        return fallback

    command = body.get("command")
    spec = schedules.Spec(
        name=field("name", NAME, ...),
        selector=field("selector", read_selector, ...),
        command=(jobs.command_settings(read_command(_object(command, "command"), None, within="command."))
                 if "command" in body or old is None else base["command"]),
        rollout=field("rollout", read_rollout, {"max_in_flight": None, "max_failures": None}),
        cron=field("cron", nullable(_cron), None),
        timezone=field("timezone", _timezone, "UTC"),
        interval_s=field("interval_s", nullable(Int(1, 31_536_000)), None),
        overlap=field("overlap", Str(1, 8, choices=rules.OVERLAPS), "skip"),
        catch_up=field("catch_up", Str(1, 8, choices=rules.CATCH_UPS), "skip"),
        enabled=field("enabled", Bool, True),
    )
    if old is None and (spec.name is ... or spec.selector is ...):
        missing = "name" if spec.name is ... else "selector"
        raise invalid(f"{missing} is required.", missing)
    if "cron" in body and spec.cron is not None and "interval_s" not in body:
        spec = schedules.Spec(**{**spec.__dict__, "interval_s": None})  # a PATCH switching to cron
    if "interval_s" in body and spec.interval_s is not None and "cron" not in body:
        spec = schedules.Spec(**{**spec.__dict__, "cron": None})
    if (spec.cron is None) == (spec.interval_s is None):
        raise invalid("Exactly one of cron and interval_s is required.", "cron")
    return spec, given


def _schedule_id(request: Request) -> uuid.UUID:
    return path_id(request, "schedule_id", "schedule")


async def create_schedule(request: Request) -> JSONResponse:
    state = dispatch_state.of(request)
    body = await read_json_object(request)
    if "command" not in body:
        raise invalid("command is required.", "command")
    spec, _ = _read(body)
    row = await schedules.create(state.db, spec, request.state.operator, request.state.audit,
                                 await state.approval_policy.get())
    _log.info("schedule_created", schedule_id=row["id"], status=row["status"])
    return JSONResponse(schedule_view(row), status_code=201)


async def list_schedules(request: Request) -> JSONResponse:
    db = dispatch_state.of(request).db
    limit = query_int(request, "limit", 1, 1000, 100)
    after = request.query_params.get("after") or ""
    if after:
        NAME(after, "after")  # a name: text PostgreSQL can compare, nothing else
    rows = await schedules.page(db, after, limit, request.state.operator.scope)
    page, more = rows[:limit], len(rows) > limit
    return JSONResponse({"schedules": [schedule_view(r) for r in page],
                         "next": page[-1]["name"] if more else None})


async def get_schedule(request: Request) -> JSONResponse:
    row = await schedules.get(dispatch_state.of(request).db, _schedule_id(request), request.state.operator.scope)
    return JSONResponse(schedule_view(row))


async def update_schedule(request: Request) -> JSONResponse:
    state, schedule_id = dispatch_state.of(request), _schedule_id(request)
    body = await read_json_object(request)
    current = await schedules.get(state.db, schedule_id, request.state.operator.scope)
    spec, given = _read(body, schedules.Spec.of_row(current))
    changes = {f: getattr(spec, f) for f in given}
    for f in ("cron", "interval_s"):  # switching between the two clears the other
        if getattr(spec, f) != current[f]:
            changes[f] = getattr(spec, f)
    row = await schedules.update(state.db, schedule_id, changes, request.state.operator, request.state.audit,
                                 await state.approval_policy.get())
    return JSONResponse(schedule_view(row))


async def delete_schedule(request: Request) -> Response:
    state = dispatch_state.of(request)
    await schedules.delete(state.db, _schedule_id(request), request.state.operator, request.state.audit)
    return Response(status_code=204)


async def list_runs(request: Request) -> JSONResponse:
    db = dispatch_state.of(request).db
    limit = query_int(request, "limit", 1, 1000, 100)
    before, _ = decode_cursor(request.query_params.get("before"))
    rows = await schedules.runs(db, _schedule_id(request), before, limit, request.state.operator.scope)
    page, more = rows[:limit], len(rows) > limit
    return JSONResponse({"runs": [run_view(r) for r in page],
                         "next": encode_cursor(page[-1]["scheduled_for"], _schedule_id(request)) if more else None})


async def run_now(request: Request) -> JSONResponse:
    state = dispatch_state.of(request)
    job = await schedules.run_now(state.db, state.signer, _schedule_id(request), request.state.operator,
                                  request.state.audit)
    if job["materialised"] < job["target_count"] and job["status"] == "running":
        state.materialiser.kick()
    counts = await jobs.counts(state.db, [job["id"]])
    return JSONResponse(job_view(job, counts[job["id"]]), status_code=201)


async def _decide(request: Request, approve: bool) -> JSONResponse:
    state, schedule_id = dispatch_state.of(request), _schedule_id(request)
    comment = await _comment(request)
    await approvals.decide_schedule(state.db, schedule_id, request.state.operator, request.state.audit, approve,
                                    comment)
    return JSONResponse(schedule_view(await schedules.get(state.db, schedule_id)))


async def approve_schedule(request: Request) -> JSONResponse:
    return await _decide(request, True)


async def deny_schedule(request: Request) -> JSONResponse:
    return await _decide(request, False)
