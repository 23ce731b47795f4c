"""Operator endpoints of auth: who am I, operators and their tokens (admins; an operator its
own tokens), console sign-in and sign-out, and the audit trail. Each handler parses, calls
one operation (accounts.py) and renders (views.py)."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.auth import accounts, registry
from services.auth import state as auth_state
from services.auth.oidc import NotVerified
from services.auth.views import audit_view, operator_token_view, operator_view
from services.common import audit
from services.common.errors import invalid, not_found
from services.common.http import client_address
from services.common.operators import ROLES
from services.common.paging import decode_cursor, next_cursor
from services.common.tokens import bearer_token
from services.common.validation import (
    Bool,
    Int,
    Str,
    StrMap,
    nullable,
    parse_timestamp,
    path_id,
    printable,
    query_int,
    read_json_object,
    rfc3339,
    take,
)

NAME = Str(1, 64, pattern=r"[a-z0-9_.-]+", rule="must be 1 to 64 of a-z, 0-9, '_', '.', '-'")
PASSWORD = Str(12, 1024)
COMMAND_TYPE = r"\*|[a-z0-9_.-]{1,64}"


def _email(value, name: str) -> str:
    text = Str(3, 254, pattern=r"[^\s@]+@[^\s@]+", rule="must be an email address")(value, name)
    return text.lower()


def _scope(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise invalid(f"{name} must be an object: {{\"labels\": {{...}}, \"command_types\": [...]}}.", name)
    labels = take(value, "labels", StrMap(key=printable(255, 1)), {}, within=f"{name}.")
    types = value.get("command_types", ["*"])
    if types is None:
        types = ["*"]
    if not isinstance(types, list) or not 1 <= len(types) <= 100:
        raise invalid(f"{name}.command_types must be a list of 1 to 100 types (\"*\": all).", f"{name}.command_types")
    for t in types:
        Str(1, 64, pattern=COMMAND_TYPE, rule="must be a command type or \"*\"")(t, f"{name}.command_types")
    return {"labels": labels, "command_types": list(dict.fromkeys(types))}


def _context(request: Request) -> audit.Context:
    return request.state.audit


# --- who am I, operators ----------------------------------------------------------------------


async def whoami(request: Request) -> JSONResponse:
    row = await accounts.get_operator(auth_state.of(request).db, request.state.operator.id)
    return JSONResponse(operator_view(row))


async def create_operator(request: Request) -> JSONResponse:
    body = await read_json_object(request)
    row = await accounts.create_operator(
        auth_state.of(request).db, _context(request),
        name=take(body, "name", NAME),
        role=take(body, "role", Str(1, 16, choices=ROLES)),
        scope=take(body, "scope", _scope, {"labels": {}, "command_types": ["*"]}),
        email=take(body, "email", nullable(_email), None),
        password=take(body, "password", nullable(PASSWORD), None))
    return JSONResponse(operator_view(row), status_code=201)


async def list_operators(request: Request) -> JSONResponse:
    rows = await accounts.list_operators(auth_state.of(request).db)
    return JSONResponse({"operators": [operator_view(r) for r in rows]})


async def get_operator(request: Request) -> JSONResponse:
    return JSONResponse(operator_view(await accounts.get_operator(auth_state.of(request).db, _operator_id(request))))


async def update_operator(request: Request) -> JSONResponse:
    body = await read_json_object(request)
    changes = accounts.Changes(
        role=take(body, "role", nullable(Str(1, 16, choices=ROLES)), None),
        scope=take(body, "scope", nullable(_scope), None),
        email=take(body, "email", nullable(_email), None) if "email" in body else None,
        email_given="email" in body,
        password=take(body, "password", nullable(PASSWORD), None),
        disabled=take(body, "disabled", nullable(Bool), None))
    row = await accounts.update_operator(auth_state.of(request).db, _context(request), _operator_id(request), changes)
    return JSONResponse(operator_view(row))


def _operator_id(request: Request) -> uuid.UUID:
    return path_id(request, "operator_id", "operator")


# --- operator tokens ---------------------------------------------------------------------------


async def create_token(request: Request) -> JSONResponse:
    body = await read_json_object(request)
    row, secret = await accounts.create_token(
        auth_state.of(request).db, _context(request), request.state.operator, _operator_id(request),
        expires_in_s=take(body, "expires_in_s", Int(60, 31536000), 2592000),
        note=take(body, "note", Str(0, 1024), ""))
    return JSONResponse({**operator_token_view(row), "token": secret}, status_code=201)


async def list_tokens(request: Request) -> JSONResponse:
    rows = await accounts.list_tokens(auth_state.of(request).db, request.state.operator, _operator_id(request))
    return JSONResponse({"tokens": [operator_token_view(r) for r in rows]})


async def revoke_token(request: Request) -> Response:
    await accounts.revoke_token(auth_state.of(request).db, _context(request), request.state.operator,
                                path_id(request, "token_id", "operator token"))
    return Response(status_code=204)


# --- console sign-in and sign-out --------------------------------------------------------------


async def sign_in(request: Request) -> JSONResponse:
    """`{"method": "password", "name", "password"}`, `{"method": "token", "token"}` or
    `{"method": "oidc", "id_token", "nonce", "access_token"}`, and `session_s` (at most 12 h). Failures are
    rate limited per name and per address (FLEETLINE_SIGN_IN_RATE_LIMIT)."""
    state = auth_state.of(request)
    body = await read_json_object(request)
    method = take(body, "method", Str(1, 16, choices=("password", "token", "oidc")))
    session_s = take(body, "session_s", Int(60, accounts.MAX_SESSION_S), accounts.MAX_SESSION_S)
    address = client_address(request, state.settings.trusted_proxies)
    ctx = audit.Context(audit.Actor("operator", None, ""), request.headers.get("x-request-id"), address)
    name = take(body, "name", NAME) if method == "password" else ""
    keys = [f"address:{address}"] + ([f"name:{name}"] if name else [])
    async with state.sign_in_limit.failures(*keys, counted=(accounts.SignInRefused,)):
        if method == "password":
            session = await accounts.sign_in_with_password(state.db, ctx, name, take(body, "password", Str(1, 1024)),
                                                           session_s)
        elif method == "token":
            operator = await state.operator_auth.authenticate(take(body, "token", Str(1, 512)))
            session = await accounts.sign_in_with_token(state.db, ctx, operator, session_s)
        else:
            session = await _sign_in_with_oidc(request, ctx, body, session_s)
    return JSONResponse({"session": session.secret, "expires_at": session.expires_at.isoformat(),
                         "operator": operator_view(session.operator)}, status_code=201)


async def oidc_nonce(request: Request) -> JSONResponse:
    """A nonce for the console's next authorization request (an extension): the only nonces
    an ID token may carry to sign in, each once. Limited per address like failed sign-ins."""
    state = auth_state.of(request)
    if state.oidc is None:
        raise not_found("OpenID Connect sign-in is not configured.")
    await state.oidc_nonce_limit.check(client_address(request, state.settings.trusted_proxies))
    nonce, expires_at = await accounts.issue_oidc_nonce(state.db)
    return JSONResponse({"nonce": nonce, "expires_at": rfc3339(expires_at)}, status_code=201)


async def _sign_in_with_oidc(request: Request, ctx: audit.Context, body: dict, session_s: int):
    db, verifier = auth_state.of(request).db, auth_state.of(request).oidc
    if verifier is None:
        raise invalid("OpenID Connect sign-in is not configured.", "method")
    id_token, nonce = take(body, "id_token", Str(1, 16384)), take(body, "nonce", Str(1, 512))
    access_token = take(body, "access_token", nullable(Str(1, 16384)), None)
    try:
        email = await verifier.verified_email(id_token, nonce, access_token)
        # Bound to a nonce auth issued for the console's request, and spent by this sign-in:
        # an ID token from elsewhere, or one already used, opens nothing.
        if not await accounts.take_oidc_nonce(db, nonce):
            raise NotVerified("the ID token's nonce was not issued here, or was used already")
    except NotVerified as exc:
        await audit.record(db, audit.Context(audit.Actor("operator", None, "(oidc)"), ctx.request_id, ctx.source_ip),
                           "console.sign_in", outcome="failed", details={"method": "oidc", "reason": str(exc)})
        raise accounts.SignInRefused() from None
    return await accounts.sign_in_with_email(db, ctx, email, session_s)


async def sign_out(request: Request) -> Response:
    await accounts.sign_out(auth_state.of(request).db, _context(request), bearer_token(request))
    auth_state.of(request).operator_auth.forget(bearer_token(request))
    return Response(status_code=204)


# --- the audit trail ------------------------------------------------------------------------------


async def list_audit(request: Request) -> JSONResponse:
    params = request.query_params
    actor = params.get("actor") or None
    actor_id = actor_name = None
    if actor is not None:
        try:
            actor_id = uuid.UUID(actor)
        except ValueError:
            actor_name = Str(1, 255)(actor, "actor")
    action = Str(1, 64)(params["action"], "action") if params.get("action") else None
    target = Str(1, 255)(params["target_id"], "target_id") if params.get("target_id") else None
    since = parse_timestamp(params["since"], "since") if params.get("since") else None
    limit = query_int(request, "limit", 1, 1000, 100)
    rows = await registry.audit_page(auth_state.of(request).db, decode_cursor(params.get("before")), limit,
                                     registry.AuditFilter(actor_id, actor_name, action, target, since))
    return JSONResponse({"events": [audit_view(r) for r in rows[:limit]], "next": next_cursor(rows, limit, "at")})

