"""Operator endpoints of auth: registration tokens and agents. Each handler parses, calls one
operation (registry.py, enrolment.py) and renders (views.py); refusals are answered by
api_errors.py."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fleetline.labels import split_label
from fleetline.statuses import AGENT_STATUSES
from services.auth import enrolment, registry
from services.auth import state as auth_state
from services.auth.views import agent_view, token_view
from services.common.errors import invalid
from services.common.paging import decode_cursor, next_cursor
from services.common.validation import (
    Int,
    Str,
    check_text,
    path_id,
    printable,
    query_choice,
    query_int,
    read_json_object,
    read_where,
    take,
)


async def create_registration_token(request: Request) -> JSONResponse:
    body = await read_json_object(request)
    row, secret = await registry.create_token(
        auth_state.of(request).db, request.state.audit,
        max_uses=take(body, "max_uses", Int(1, 100000), 1),
        expires_in_s=take(body, "expires_in_s", Int(60, 31536000), 86400),
        note=take(body, "note", Str(0, 1024), ""))
    # The secret is shown here once. Beside it, the fingerprint of the command-signing root
    # key that agents enrolling with it pin (--root-key-sha256).
    return JSONResponse({**token_view(row), "token": secret,
                         "root_key_sha256": auth_state.of(request).root_key_sha256}, status_code=201)


async def list_registration_tokens(request: Request) -> JSONResponse:
    return JSONResponse({"tokens": [token_view(r) for r in await registry.list_tokens(auth_state.of(request).db)]})


async def revoke_registration_token(request: Request) -> Response:
    await registry.revoke_token(auth_state.of(request).db, request.state.audit,
                                path_id(request, "token_id", "registration token"))
    return Response(status_code=204)


async def list_agents(request: Request) -> JSONResponse:
    """Every agent, as the API says; with `limit` (and `before`, `status`, `label`), one page
    of them and a `next` cursor, for fleets too large for one answer."""
    db, params = auth_state.of(request).db, request.query_params
    where = registry.AgentFilter(status=query_choice(request, "status", AGENT_STATUSES),
                                 labels=_labels(params.getlist("label")),
                                 where=read_where(params["where"], "where") if "where" in params else None)
    scope = request.state.operator.scope
    view = _agent_view(request)
    if not any(k in params for k in ("limit", "before", "status", "label", "where")):
        rows = await registry.all_agents(db, scope)
        return JSONResponse({"agents": [view(r) for r in rows], "next": None})
    limit = query_int(request, "limit", 1, 10000, 1000)
    rows = await registry.agent_page(db, scope, decode_cursor(params.get("before")), limit, where)
    return JSONResponse({"agents": [view(r) for r in rows[:limit]], "next": next_cursor(rows, limit)})


def _agent_view(request: Request) -> Callable[[Any], dict]:
    """agent_view with `online` as this service's settings say, at one instant for a page."""
    settings, now = auth_state.of(request).settings, datetime.now(timezone.utc)
    return functools.partial(agent_view, offline_after_s=settings.offline_after(), now=now)


def _labels(pairs: list[str]) -> dict[str, str]:
    """`label=key=value` query parameters (repeatable: every pair must match)."""
    labels = {}
    for pair in pairs:
        try:
            key, value = split_label(pair)
            if len(key) > 255 or len(value) > 255:
                raise ValueError(pair)
        except ValueError:
            raise invalid("label must be key=value (each at most 255 characters).", "label") from None
        check_text(pair, "label")
        labels[key] = value
    return labels


async def get_agent(request: Request) -> JSONResponse:
    return JSONResponse(_agent_view(request)(await registry.get_agent(
        auth_state.of(request).db, request.state.operator.scope, path_id(request, "agent_id", "agent"))))


async def label_agent(request: Request) -> JSONResponse:
    """`{"labels": {"k": "v", "gone": null}}`: operator labels set and removed."""
    body = await read_json_object(request)
    changes = take(body, "labels", _label_changes)
    row = await registry.set_operator_labels(auth_state.of(request).db, request.state.audit,
                                             request.state.operator.scope, path_id(request, "agent_id", "agent"),
                                             changes)
    return JSONResponse(_agent_view(request)(row))


def _label_changes(value: Any, name: str) -> dict[str, str | None]:
    if not isinstance(value, dict) or not 1 <= len(value) <= 64:
        raise invalid(f"{name} must be an object of 1 to 64 labels (a value sets one, null removes it).", name)
    out: dict[str, str | None] = {}
    for key, label in value.items():
        printable(255, 1)(key, name)  # as registration's label keys
        out[key] = None if label is None else Str(0, 255)(label, name)
    return out


async def refresh_facts(request: Request) -> JSONResponse:
    state, agent_id = auth_state.of(request), path_id(request, "agent_id", "agent")
    await registry.request_facts(state.db, request.state.audit, request.state.operator.scope, agent_id)
    row = await registry.get_agent(state.db, request.state.operator.scope, agent_id)
    return JSONResponse(_agent_view(request)(row), status_code=202)


async def revoke_agent(request: Request) -> Response:
    await enrolment.revoke(auth_state.of(request).db, request.state.audit, path_id(request, "agent_id", "agent"))
    return Response(status_code=204)
