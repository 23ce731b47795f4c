"""Operator endpoints of dispatch: create (idempotent), list (cursor paging), get, cancel."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

from services.common.errors import conflict, invalid, not_found
from services.common.ethos import Log
from services.common.paging import decode_cursor, next_cursor
from services.common.validation import (
    Int, JsonObject, Str, nullable, parse_uuid, path_uuid, query_int, read_json_object, take,
)
from services.dispatch import lifecycle
from services.dispatch import queries as q

_log = Log("dispatch", "admin")


async def create_command(request: Request) -> JSONResponse:
    state = request.app.state
    state.admin_check(request)
    body = await read_json_object(request)
    agent_id = take(body, "agent_id", parse_uuid)
    ctype = take(body, "type", Str(1, 64, pattern=r"[a-z0-9_.-]+"))
    params = take(body, "params", JsonObject(65536), {})
    priority = take(body, "priority", Int(-100, 100), 0)
    ttl_s = take(body, "ttl_s", Int(1, 2592000), 14400)
    max_retries = take(body, "max_retries", Int(0, 100), 5)
    ack_timeout_s = take(body, "ack_timeout_s", Int(1, 86400), 300)
    run_timeout_s = take(body, "run_timeout_s", Int(1, 604800), 3600)
    idem_key = take(body, "idempotency_key", nullable(Str(1, 255)), None)

    agent_uuid = uuid.UUID(agent_id)
    row = await state.db.fetchrow(
        q.CREATE_COMMAND, agent_uuid, uuid.uuid4(), ctype, params, priority, max_retries,
        ack_timeout_s, run_timeout_s, idem_key, ttl_s,
    )
    if row is None:
        raise not_found("No such agent.")
    if row["agent_status"] != "active":
        raise conflict("This agent is revoked; it can receive no commands.")
    if row["id"] is None:  # the idempotency key already names a command
        existing = await state.db.fetchrow(q.GET_BY_IDEMPOTENCY_KEY, agent_uuid, idem_key)
        return JSONResponse(lifecycle.state_view(existing), status_code=200)
    await state.db.execute(q.NOTIFY_NEW_COMMAND, agent_id)
    _log.info("command_queued", command_id=row["id"], agent_id=agent_id, type=ctype)
    return JSONResponse(lifecycle.state_view(row), status_code=201)


async def list_commands(request: Request) -> JSONResponse:
    state = request.app.state
    state.admin_check(request)
    params = request.query_params
    agent_id = params.get("agent_id") or None
    agent_uuid = uuid.UUID(parse_uuid(agent_id, "agent_id")) if agent_id else None
    status = params.get("status") or None
    if status is not None and status not in lifecycle.STATUSES:
        raise invalid(f"status must be one of: {', '.join(lifecycle.STATUSES)}.", "status")
    limit = query_int(request, "limit", 1, 1000, 100)
    before_at, before_id = decode_cursor(params.get("before"))
    filters = [v for v in (agent_uuid, status) if v is not None]
    sql = q.LIST_COMMANDS[(agent_uuid is not None, status is not None)]
    rows = await state.db.fetch(sql, before_at, before_id, limit + 1, *filters)
    return JSONResponse({"commands": [lifecycle.state_view(r) for r in rows[:limit]],
                         "next": next_cursor(rows, limit)})


async def get_command(request: Request) -> JSONResponse:
    state = request.app.state
    state.admin_check(request)
    command_id = path_uuid(request, "command_id")
    row = command_id and await state.db.fetchrow(q.GET_COMMAND, uuid.UUID(command_id))
    if not row:
        raise not_found("No such command.")
    return JSONResponse(lifecycle.state_view(row))


async def cancel_command(request: Request) -> JSONResponse:
    state = request.app.state
    state.admin_check(request)
    command_id = path_uuid(request, "command_id")
    if command_id is None:
        raise not_found("No such command.")
    row = await state.db.fetchrow(q.CANCEL_COMMAND, uuid.UUID(command_id))
    if row is None:
        current = await state.db.fetchrow(q.GET_COMMAND, uuid.UUID(command_id))
        if current is None:
            raise not_found("No such command.")
        raise conflict(f"This command is already {current['status']}; it cannot be cancelled.")
    _log.info("command_cancelled", command_id=command_id)
    return JSONResponse(lifecycle.state_view(row))
