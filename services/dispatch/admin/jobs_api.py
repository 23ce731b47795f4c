"""Operator endpoints for jobs: create (idempotent, or a dry run), list, get, targets,
cancel. Mounted behind the admin guard (app.py). Handlers parse, call jobs.py, render."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from fleetline.ethos import Log
from services.common.errors import invalid
from services.common.paging import decode_cursor, encode_cursor
from services.common.validation import (
    Bool,
    Int,
    Str,
    StrMap,
    nullable,
    parse_uuid,
    path_id,
    query_choice,
    query_int,
    read_json_object,
    read_where,
    take,
)
from services.dispatch import state as dispatch_state
from services.dispatch.admin.commands_api import read_command, require_release
from services.dispatch.lifecycle import jobs, rollout
from services.dispatch.views import job_view, target_view

_log = Log("dispatch", "jobs")

MAX_AGENT_IDS = 10000


def _object(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise invalid(f"{name} must be a JSON object.", name)
    return value


def read_selector(value: Any, name: str = "selector") -> dict:
    """Exactly one of agent_ids (1-10,000 UUIDs, repeats dropped), labels (at least one
    pair), all_active (true) or where (an expression), or labels and where together."""
    selector = _object(value, name)
    if "where" in selector:
        read_where(selector["where"], "selector.where")  # 400 with the position, when malformed
        others = [k for k in selector if k != "where"]
        if others not in ([], ["labels"]):
            raise invalid("selector.where combines only with labels.", "selector")
        out = {"where": selector["where"]}
        if others:
            out.update(read_selector({"labels": selector["labels"]}, name))
        return out
    kinds = [k for k in ("agent_ids", "labels", "all_active") if k in selector]
    if len(kinds) != 1:
        raise invalid("selector must have exactly one of agent_ids, labels, all_active, where.", "selector")
    kind = kinds[0]
    name = f"selector.{kind}"
    given = selector[kind]
    if kind == "agent_ids":
        if not isinstance(given, list) or not 1 <= len(given) <= MAX_AGENT_IDS:
            raise invalid(f"{name} must be a list of 1 to {MAX_AGENT_IDS} agent ids.", name)
        return {kind: list(dict.fromkeys(parse_uuid(i, name) for i in given))}
    if kind == "labels":
        labels = StrMap()(given, name)
        if not labels:
            raise invalid(f"{name} must have at least one label.", name)
        return {kind: labels}
    if given is not True:
        raise invalid(f"{name} must be true.", name)
    return {kind: True}


def _window(value: Any, name: str) -> int | str:
    if isinstance(value, str):
        if not rollout.percentage(value):
            raise invalid(f"{name} must be 1 to 10000, or a percentage from \"1%\" to \"100%\".", name)
        return value
    return Int(1, 10000)(value, name)


def read_rollout(value: Any, name: str = "rollout") -> dict:
    body = _object(value, name)
    out = {"max_in_flight": take(body, "max_in_flight", _window, None, within="rollout."),
           "max_failures": take(body, "max_failures", Int(0, 10000), None, within="rollout.")}
    # The first `canary` targets alone, the rest released once they all succeeded: an
    # extension of 1.3's rollout, shown only on the jobs that ask for it.
    canary = take(body, "canary", nullable(Int(1, 10000)), None, within="rollout.")
    return out if canary is None else {**out, "canary": canary}


async def create_job(request: Request) -> JSONResponse:
    state = dispatch_state.of(request)
    body = await read_json_object(request)
    new = jobs.NewJob(
        selector=take(body, "selector", read_selector),
        command=read_command(take(body, "command", _object), None, within="command."),
        rollout=take(body, "rollout", read_rollout, {"max_in_flight": None, "max_failures": None}),
        idempotency_key=take(body, "idempotency_key", nullable(Str(1, 255)), None),
    )
    await require_release(state.db, new.command, "command.")
    if take(body, "dry_run", Bool, False):
        count, named = await jobs.count_targets(state.db, new.selector, request.state.operator)
        return JSONResponse({"target_count": count,
                             "targets": [{"agent_id": str(r["id"]), "hostname": r["hostname"]} for r in named]})
    job, created = await jobs.create_once(state.db, new, state.signer, request.state.operator, request.state.audit,
                                          await state.approval_policy.get(), state.settings.job_slice_targets)
    if job["materialised"] < job["target_count"] and job["status"] == "running":
        state.materialiser.kick()  # its commands are made in slices, starting now
    if created:
        _log.info("job_created", job_id=job["id"], targets=job["target_count"],
                  type=new.command.type, max_in_flight=job["max_in_flight"],
                  max_failures=job["max_failures"])
    return await _render(request, job, 201 if created else 200)


async def _render(request: Request, job, status_code: int = 200) -> JSONResponse:
    counts = await jobs.counts(dispatch_state.of(request).db, [job["id"]])
    return JSONResponse(job_view(job, counts[job["id"]]), status_code=status_code)


def _job_id(request: Request) -> uuid.UUID:
    return path_id(request, "job_id", "job")


async def list_jobs(request: Request) -> JSONResponse:
    db = dispatch_state.of(request).db
    status = query_choice(request, "status", rollout.JOB_STATUSES)
    limit = query_int(request, "limit", 1, 1000, 100)
    rows = (await jobs.page(db, decode_cursor(request.query_params.get("before")), limit, status,
                            request.state.operator.scope))
    page, more = rows[:limit], len(rows) > limit
    counts = await jobs.counts(db, [r["id"] for r in page])
    return JSONResponse({
        "jobs": [job_view(r, counts[r["id"]]) for r in page],
        "next": encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None,
    })


async def get_job(request: Request) -> JSONResponse:
    return await _render(request, await jobs.get(dispatch_state.of(request).db, _job_id(request),
                                                 request.state.operator.scope))


async def list_targets(request: Request) -> JSONResponse:
    db = dispatch_state.of(request).db
    job_id = _job_id(request)
    status = query_choice(request, "status", rollout.TARGET_STATUSES)
    limit = query_int(request, "limit", 1, 1000, 100)
    _, before_agent = decode_cursor(request.query_params.get("before"))
    job = await jobs.get(db, job_id, request.state.operator.scope)
    rows = await jobs.targets(db, job_id, before_agent, limit, status)
    page, more = rows[:limit], len(rows) > limit
    return JSONResponse({
        "targets": [target_view(r) for r in page],
        "next": encode_cursor(job["created_at"], page[-1]["agent_id"]) if more else None,
    })


async def cancel_job(request: Request) -> JSONResponse:
    job_id = _job_id(request)
    state = dispatch_state.of(request)
    job = await jobs.cancel(state.db, job_id, state.signer, request.state.operator, request.state.audit)
    _log.info("job_cancelled", job_id=job_id)
    return await _render(request, job)
