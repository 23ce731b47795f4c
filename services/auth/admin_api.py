"""Operator endpoints of auth: registration tokens and agents."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fleetline.statuses import AGENT_STATUSES
from services.auth import enrolment
from services.auth import queries as q
from services.auth.secrets import REGISTRATION_PREFIX, digest, new_secret
from services.common.errors import invalid, not_found
from fleetline.ethos import Log
from fleetline.labels import split_label
from services.common.paging import decode_cursor, next_cursor
from services.common.validation import (
    Int, Str, check_text, path_id, query_choice, query_int, read_json_object, rfc3339, take,
)

_log = Log("auth", "admin")


def _token_view(row) -> dict:
    return {
        "id": str(row["id"]),
        "max_uses": row["max_uses"],
        "uses": row["uses"],
        "expires_at": rfc3339(row["expires_at"]),
        "note": row["note"],
        "created_at": rfc3339(row["created_at"]),
        "revoked_at": rfc3339(row["revoked_at"]),
    }


def agent_view(row) -> dict:
    return {
        "id": str(row["id"]),
        "machine_id": row["machine_id"],
        "hostname": row["hostname"],
        "os": row["os"],
        "arch": row["arch"],
        "agent_version": row["agent_version"],
        "labels": row["labels"],
        "status": row["status"],
        "created_at": rfc3339(row["created_at"]),
        "last_seen_at": rfc3339(row["last_seen_at"]),
        "revoked_at": rfc3339(row["revoked_at"]),
    }


async def create_registration_token(request: Request) -> JSONResponse:
    body = await read_json_object(request)
    max_uses = take(body, "max_uses", Int(1, 100000), 1)
    expires_in_s = take(body, "expires_in_s", Int(60, 31536000), 86400)
    note = take(body, "note", Str(0, 1024), "")
    secret = new_secret(REGISTRATION_PREFIX)
    row = await request.app.state.db.fetchrow(
        q.INSERT_REGISTRATION_TOKEN, uuid.uuid4(), digest(secret), max_uses, note, expires_in_s
    )
    _log.info("registration_token_created", token_id=row["id"], max_uses=max_uses)
    # The secret is shown here once; only its digest is stored. Beside it, the fingerprint of
    # the command-signing root key that agents enrolling with it pin (--root-key-sha256).
    return JSONResponse({**_token_view(row), "token": secret,
                         "root_key_sha256": request.app.state.root_key_sha256}, status_code=201)


async def list_registration_tokens(request: Request) -> JSONResponse:
    rows = await request.app.state.db.fetch(q.LIST_REGISTRATION_TOKENS)
    return JSONResponse({"tokens": [_token_view(r) for r in rows]})


async def revoke_registration_token(request: Request) -> Response:
    token_id = path_id(request, "token_id", "registration token")
    if await request.app.state.db.fetchval(q.REVOKE_REGISTRATION_TOKEN, token_id) is None:
        raise not_found("No such registration token.")
    _log.info("registration_token_revoked", token_id=token_id)
    return Response(status_code=204)


async def list_agents(request: Request) -> JSONResponse:
    """Every agent, as API.md says; with `limit` (and `before`, `status`, `label`), one page
    of them and a `next` cursor, for fleets too large for one answer."""
    db, params = request.app.state.db, request.query_params
    status = query_choice(request, "status", AGENT_STATUSES)
    labels = _labels(params.getlist("label"))
    if not any(k in params for k in ("limit", "before", "status", "label")):
        rows = await db.fetch(q.LIST_AGENTS)
        return JSONResponse({"agents": [agent_view(r) for r in rows], "next": None})
    limit = query_int(request, "limit", 1, 10000, 1000)
    before_at, before_id = decode_cursor(params.get("before"))
    if labels:
        rows = await db.fetch(q.LIST_AGENTS_PAGE_BY_LABELS, before_at, before_id, limit + 1, status, labels)
    elif status is None:
        rows = await db.fetch(q.LIST_AGENTS_PAGE, before_at, before_id, limit + 1)
    else:
        rows = await db.fetch(q.LIST_AGENTS_PAGE_BY_STATUS, before_at, before_id, limit + 1, status)
    return JSONResponse({"agents": [agent_view(r) for r in rows[:limit]], "next": next_cursor(rows, limit)})


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
    row = await request.app.state.db.fetchrow(q.GET_AGENT, path_id(request, "agent_id", "agent"))
    if row is None:
        raise not_found("No such agent.")
    return JSONResponse(agent_view(row))


async def revoke_agent(request: Request) -> Response:
    await enrolment.revoke(request.app.state.db, path_id(request, "agent_id", "agent"))
    return Response(status_code=204)
