"""Webhook endpoints of dispatch (docs/api.md, events out), admin only: create (the secret
shown once), list, read (never a secret), change (rotate_secret: a new one shown once, the
old one signing too for 24 h), delete, an endpoint's deliveries and a retry."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fleetline.ethos import Log
from services.common import audit
from services.common.errors import conflict, invalid, not_found
from services.common.paging import decode_cursor, next_cursor
from services.common.validation import (
    Bool,
    Str,
    nullable,
    path_id,
    printable,
    query_choice,
    query_int,
    read_json_object,
    rfc3339,
    take,
)
from services.dispatch import state as dispatch_state
from services.dispatch.webhooks import queries as q
from services.dispatch.webhooks import rules
from services.dispatch.webhooks.addresses import NotAllowed, check_url

_log = Log("dispatch", "webhooks")
FIELDS = ("url", "events", "description", "enabled", "rotate_secret")


def endpoint_view(row) -> dict:
    return {"id": str(row["id"]), "url": row["url"], "events": list(row["events"]),
            "description": row["description"], "enabled": row["enabled"],
            "disabled_reason": row["disabled_reason"], "created_at": rfc3339(row["created_at"]),
            "created_by": row["created_by"], "updated_at": rfc3339(row["updated_at"]),
            "previous_secret_valid_until": rfc3339(row["previous_secret_until"])}


def delivery_view(row) -> dict:
    return {"id": str(row["id"]), "event_type": row["event_type"], "status": row["status"],
            "attempts": row["attempts"], "created_at": rfc3339(row["created_at"]),
            "last_attempt_at": rfc3339(row["last_attempt_at"]), "delivered_at": rfc3339(row["delivered_at"]),
            "next_attempt_at": rfc3339(row["next_attempt_at"]) if row["status"] == "pending" else None,
            "status_code": row["status_code"], "latency_ms": row["latency_ms"], "error": row["error"]}


def _url(request: Request):
    allow = dispatch_state.of(request).settings.webhook_allow_private

    def check(value: Any, name: str) -> str:
        text = Str(1, 2048)(value, name)
        try:
            check_url(text, allow)
        except NotAllowed as exc:
            raise invalid(f"{name}: {exc}.", name) from None
        return text
    return check


def _events(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= 50:
        raise invalid(f"{name} must be a list of 1 to 50 event types.", name)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not rules.subscribable(item):
            raise invalid(f"{name}[{i}] is not an event type: {', '.join(rules.EVENT_TYPES)}, audit.<action> "
                          "or audit.*.", f"{name}[{i}]")
    return sorted(set(value))


async def create(request: Request) -> JSONResponse:
    state = dispatch_state.of(request)
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"url", "events", "description"})
    if unknown:
        raise invalid(f"{unknown[0]} is not a field of a webhook.", unknown[0])
    url = take(body, "url", _url(request))
    events = take(body, "events", _events)
    description = take(body, "description", printable(500), "")
    secret = rules.new_secret()
    ctx: audit.Context = request.state.audit
    async with state.db.transaction():
        row = await state.db.fetchrow(q.CREATE_ENDPOINT, uuid.uuid4(), url, events, description, secret,
                                      ctx.actor.name)
        await audit.record(state.db, ctx, "webhook.create", "webhook", row["id"],
                           details={"url": url, "events": events})
    return JSONResponse({**endpoint_view(row), "secret": secret}, status_code=201)


async def list_endpoints(request: Request) -> JSONResponse:
    rows = await dispatch_state.of(request).db.fetch(q.LIST_ENDPOINTS)
    return JSONResponse({"webhooks": [endpoint_view(r) for r in rows]})


async def _endpoint(request: Request):
    row = await dispatch_state.of(request).db.fetchrow(q.GET_ENDPOINT, path_id(request, "webhook_id", "webhook"))
    if row is None:
        raise not_found("No such webhook.")
    return row


async def get_endpoint(request: Request) -> JSONResponse:
    return JSONResponse(endpoint_view(await _endpoint(request)))


async def update(request: Request) -> JSONResponse:
    state = dispatch_state.of(request)
    webhook_id = path_id(request, "webhook_id", "webhook")
    body = await read_json_object(request)
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise invalid(f"{unknown[0]} is not a field of a webhook.", unknown[0])
    url = take(body, "url", nullable(_url(request)), None)
    events = take(body, "events", nullable(_events), None)
    description = take(body, "description", nullable(printable(500)), None)
    enabled = take(body, "enabled", nullable(Bool), None)
    rotate = take(body, "rotate_secret", nullable(Bool), False)
    secret = rules.new_secret() if rotate else None
    until = datetime.now(timezone.utc) + rules.ROTATION_OVERLAP if rotate else None
    ctx: audit.Context = request.state.audit
    async with state.db.transaction():
        row = await state.db.fetchrow(q.UPDATE_ENDPOINT, webhook_id, url, events, description, enabled, secret, until)
        if row is None:
            raise not_found("No such webhook.")
        await audit.record(state.db, ctx, "webhook.update", "webhook", webhook_id, details={
            k: v for k, v in {"url": url, "events": events, "description": description, "enabled": enabled,
                              "rotate_secret": rotate or None}.items() if v is not None})
    view = endpoint_view(row)
    return JSONResponse({**view, "secret": secret} if secret else view)


async def delete(request: Request) -> Response:
    state = dispatch_state.of(request)
    webhook_id = path_id(request, "webhook_id", "webhook")
    async with state.db.transaction():
        row = await state.db.fetchrow(q.DELETE_ENDPOINT, webhook_id)
        if row is None:
            raise not_found("No such webhook.")
        await audit.record(state.db, request.state.audit, "webhook.delete", "webhook", webhook_id,
                           details={"url": row["url"]})
    return Response(status_code=204)


async def deliveries(request: Request) -> JSONResponse:
    state = dispatch_state.of(request)
    endpoint = await _endpoint(request)
    status = query_choice(request, "status", ("pending", "delivered", "failed"))
    limit = query_int(request, "limit", 1, 1000, 100)
    before_at, before_id = decode_cursor(request.query_params.get("before"))
    rows = await state.db.fetch(q.LIST_DELIVERIES, endpoint["id"], status, limit + 1, before_at, before_id)
    return JSONResponse({"deliveries": [delivery_view(r) for r in rows[:limit]], "next": next_cursor(rows, limit)})


async def retry(request: Request) -> JSONResponse:
    state = dispatch_state.of(request)
    endpoint = await _endpoint(request)
    delivery_id = path_id(request, "delivery_id", "delivery")
    async with state.db.transaction():
        done = await state.db.fetchval(q.RETRY_DELIVERY, delivery_id, endpoint["id"])
        if done is None:
            found = await state.db.fetchval(q.DELIVERY_EXISTS, delivery_id, endpoint["id"])
            if found is None:
                raise not_found("No such delivery.")
            raise conflict("A delivered delivery is not sent again.")
        await audit.record(state.db, request.state.audit, "webhook.retry", "webhook", endpoint["id"],
                           details={"delivery_id": str(delivery_id)})
    state.webhook_sender.kick()
    return JSONResponse({"id": str(delivery_id), "status": "pending"}, status_code=202)
