"""The agent-facing auth endpoints: registration and renewal."""

from __future__ import annotations

import uuid

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse

from services.auth import queries as q
from services.auth.secrets import REFRESH_PREFIX, digest, new_secret
from services.auth.rotation import REUSE_REASON, Renewal, decide
from services.common.errors import ApiError, conflict, forbidden, invalid_token
from fleetline.ethos import Log
from services.common.http import client_address
from services.common.validation import Str, StrMap, read_json_object, rfc3339, take

_log = Log("auth", "registration")
_renew_log = Log("auth", "renewal")

_SECRET = Str(1, 512)
# Found by the check, or by the unique index when two registrations race for the machine.
MACHINE_TAKEN = "This machine_id belongs to an active agent registered with another token."


async def register(request: Request) -> JSONResponse:
    state = request.app.state
    body = await read_json_object(request)
    token = take(body, "registration_token", _SECRET)
    machine_id = take(body, "machine_id", Str(1, 256))
    hostname = take(body, "hostname", Str(1, 255))
    os_name = take(body, "os", Str(0, 64), "")
    arch = take(body, "arch", Str(0, 64), "")
    version = take(body, "agent_version", Str(0, 64), "")
    labels = take(body, "labels", StrMap(), {})
    await state.registration_limit.check(client_address(request, state.settings.trusted_proxies))

    refresh_token = new_secret(REFRESH_PREFIX)
    db = state.db
    try:
        async with db.transaction():
            tok = await db.fetchrow(q.LOCK_REGISTRATION_TOKEN, digest(token))
            if tok is None:
                raise invalid_token("The registration token is unknown, expired or revoked.")
            existing = await db.fetchrow(q.ACTIVE_AGENT_FOR_MACHINE, machine_id)
            if existing is not None and existing["registration_token_id"] != tok["id"]:
                raise conflict(MACHINE_TAKEN)
            if existing is not None:
                # A retry after a lost response: same agent, no use consumed.
                agent_id = existing["id"]
                await db.execute(q.UPDATE_AGENT_DESCRIPTION, agent_id, hostname, os_name, arch,
                                 version, labels)
                await db.execute(q.REVOKE_AGENT_REFRESH_TOKENS, agent_id, "registered_again")
                reused = True
            else:
                if await db.fetchval(q.CONSUME_TOKEN_USE, tok["id"]) is None:
                    raise invalid_token("The registration token has no use left.")
                agent_id = uuid.uuid4()
                await db.execute(q.INSERT_AGENT, agent_id, machine_id, tok["id"], hostname,
                                 os_name, arch, version, labels)
                reused = False
            family_id = uuid.uuid4()  # each registration starts a family of refresh tokens
            await db.execute(q.INSERT_FAMILY, family_id, agent_id, state.settings.refresh_token_ttl_s)
            refresh_expires = await db.fetchval(q.INSERT_REFRESH_TOKEN, uuid.uuid4(), family_id,
                                                digest(refresh_token))
    except asyncpg.UniqueViolationError:
        raise conflict(MACHINE_TAKEN) from None

    # Signed only after the commit: a token never names an agent that was rolled back.
    access, access_expires = state.signer.access_token(str(agent_id), machine_id)
    keyset = await db.fetchval(q.CURRENT_KEYSET)
    _log.info("agent_registered", agent_id=agent_id, token_id=tok["id"], repeat=reused)
    return JSONResponse(
        {
            "agent_id": str(agent_id),
            "access_token": access,
            "access_token_expires_at": rfc3339(access_expires),
            "refresh_token": refresh_token,
            "refresh_token_expires_at": rfc3339(refresh_expires),
            "poll_interval_s": state.settings.poll_interval_s,
            # For agents that pin the command-signing root on first use.
            "command_keyset": keyset,
            "root_public_key": state.settings.command_root_public_key,
        },
        status_code=201,
    )


async def renew(request: Request) -> JSONResponse:
    """Rotation (rotation.py): every renewal consumes the token presented and returns its
    successor. Validation, consumption and the successor are one transaction under the
    family's lock; the access token is signed after it commits."""
    state = request.app.state
    body = await read_json_object(request)
    agent_id = take(body, "agent_id", Str(1, 64))
    refresh_token = take(body, "refresh_token", _SECRET)
    machine_id = request.headers.get("x-machine-id", "")
    try:
        agent_uuid = uuid.UUID(agent_id)
    except ValueError:
        raise invalid_token("The refresh token does not belong to this agent.") from None
    token_hash = digest(refresh_token)
    # Keyed by agent and credential: a stranger's bogus renewals for this agent id cannot
    # use up the real agent's allowance.
    await state.renew_limit.check(f"{agent_uuid}:{token_hash.hex()[:16]}")

    successor = new_secret(REFRESH_PREFIX)
    db = state.db
    async with db.transaction():
        found = await db.fetchrow(q.FIND_REFRESH_TOKEN, token_hash)
        if found is None or found["agent_id"] != agent_uuid:
            raise invalid_token("The refresh token is unknown or belongs to another agent.")
        if found["agent_status"] != "active":
            raise forbidden("agent_revoked", "This agent has been revoked.")
        if found["machine_id"] != machine_id:
            raise forbidden("machine_mismatch", "X-Machine-ID is not the machine this agent registered with.")
        family = await db.fetchrow(q.LOCK_FAMILY, found["family_id"])
        if family["revoked_at"] is not None:
            if family["revoked_reason"] == REUSE_REASON:
                raise _token_reused()
            raise invalid_token("The refresh token was revoked.")
        if not family["live"]:
            raise invalid_token("The refresh token has expired.")
        token_state = await db.fetchrow(q.TOKEN_STATE, found["id"])
        decision = decide(token_state)
        if decision is Renewal.REFUSE:
            raise invalid_token("The refresh token was revoked.")
        if decision is Renewal.REUSE:
            # Committed, not rolled back: the family stays dead whatever the caller does.
            await db.execute(q.REVOKE_FAMILY, found["family_id"], REUSE_REASON)
        else:
            if decision is Renewal.GRACE:
                await db.execute(q.REVOKE_REFRESH_TOKEN, token_state["superseded_by"])
            refresh_expires = await db.fetchval(
                q.ISSUE_SUCCESSOR, found["id"], found["family_id"], uuid.uuid4(),
                state.settings.refresh_token_ttl_s, digest(successor))
    if decision is Renewal.REUSE:
        _renew_log.warning("refresh_token_reused", agent_id=agent_uuid, family_id=found["family_id"],
                           action="family_revoked", security_event=True)
        raise _token_reused()

    access, access_expires = state.signer.access_token(str(agent_uuid), machine_id)
    _renew_log.info("token_renewed", agent_id=agent_uuid, grace=decision is Renewal.GRACE)
    return JSONResponse(
        {
            "access_token": access,
            "access_token_expires_at": rfc3339(access_expires),
            "refresh_token": successor,
            "refresh_token_expires_at": rfc3339(refresh_expires),
        }
    )


def _token_reused() -> ApiError:
    return ApiError(401, "token_reused", "This refresh token was already used: its whole family is revoked; "
                    "register again.", headers={"WWW-Authenticate": "Bearer"})


async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.signer.jwks(), headers={"Cache-Control": "max-age=300"})
