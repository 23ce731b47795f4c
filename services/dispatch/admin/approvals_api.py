"""Approval endpoints of dispatch: the fleet's approval policy (admins), and approving or
denying a job or a command that awaits approval (operators other than its creator). Each
handler parses, calls one operation (approvals.py) and renders."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from fleetline.ethos import Log
from services.common.errors import invalid
from services.common.validation import Int, Str, StrMap, path_id, printable, read_json_object, take
from services.dispatch import state as dispatch_state
from services.dispatch.lifecycle import approvals, jobs
from services.dispatch.lifecycle.approval_policy import CONDITIONS, Policy
from services.dispatch.views import job_view, policy_view, state_view

_log = Log("dispatch", "approvals")
TYPE = Str(1, 64, pattern=r"[a-z0-9_.-]+", rule="must be 1 to 64 of a-z, 0-9, '_', '.', '-'")


def _rule(value, name: str) -> dict:
    if not isinstance(value, dict) or not value:
        raise invalid(f"{name} must be an object with at least one of {', '.join(CONDITIONS)}.", name)
    unknown = sorted(set(value) - set(CONDITIONS))
    if unknown:
        raise invalid(f"{name} has an unknown condition {unknown[0]!r}: one of {', '.join(CONDITIONS)}.", name)
    rule: dict = {}
    if "command_types" in value:
        types = value["command_types"]
        if not isinstance(types, list) or not 1 <= len(types) <= 100:
            raise invalid(f"{name}.command_types must be a list of 1 to 100 types.", f"{name}.command_types")
        rule["command_types"] = list(dict.fromkeys(TYPE(t, f"{name}.command_types") for t in types))
    if "min_targets" in value:
        rule["min_targets"] = Int(1, 1_000_000)(value["min_targets"], f"{name}.min_targets")
    if "all_active" in value:
        if value["all_active"] is not True:
            raise invalid(f"{name}.all_active must be true.", f"{name}.all_active")
        rule["all_active"] = True
    if "labels" in value:
        labels = StrMap(key=printable(255, 1))(value["labels"], f"{name}.labels")
        if not labels:
            raise invalid(f"{name}.labels must name at least one label.", f"{name}.labels")
        rule["labels"] = labels
    return rule


async def get_policy(request: Request) -> JSONResponse:
    return JSONResponse(policy_view(await approvals.policy_row(dispatch_state.of(request).db)))


async def set_policy(request: Request) -> JSONResponse:
    body = await read_json_object(request)
    rules = body.get("rules", [])
    if not isinstance(rules, list) or len(rules) > 100:
        raise invalid("rules must be a list of at most 100 rules.", "rules")
    policy = Policy(tuple(_rule(r, f"rules[{i}]") for i, r in enumerate(rules)),
                    take(body, "approvals", Int(1, 10), 1), take(body, "expires_in_s", Int(60, 2592000), 86400))
    state = dispatch_state.of(request)
    row = await approvals.set_policy(state.db, request.state.audit, request.state.operator, policy)
    state.approval_policy.forget()
    _log.info("approval_policy_set", rules=len(policy.rules), approvals=policy.approvals)
    return JSONResponse(policy_view(row))


async def _comment(request: Request) -> str:
    body = await read_json_object(request) if await request.body() else {}
    return take(body, "comment", Str(0, 2048), "")


async def _decide_job(request: Request, approve: bool) -> JSONResponse:
    state, job_id = dispatch_state.of(request), path_id(request, "job_id", "job")
    comment = await _comment(request)
    await approvals.decide_job(state.db, job_id, request.state.operator, request.state.audit, approve, comment,
                               state.signer)
    row = await jobs.get(state.db, job_id)
    return JSONResponse(job_view(row, (await jobs.counts(state.db, [row["id"]]))[row["id"]]))


async def _decide_command(request: Request, approve: bool) -> JSONResponse:
    state, command_id = dispatch_state.of(request), path_id(request, "command_id", "command")
    comment = await _comment(request)
    row = await approvals.decide_command(state.db, command_id, request.state.operator, request.state.audit,
                                         approve, comment, state.signer)
    return JSONResponse(state_view(row))


async def approve_job(request: Request) -> JSONResponse:
    return await _decide_job(request, True)


async def deny_job(request: Request) -> JSONResponse:
    return await _decide_job(request, False)


async def approve_command(request: Request) -> JSONResponse:
    return await _decide_command(request, True)


async def deny_command(request: Request) -> JSONResponse:
    return await _decide_command(request, False)


