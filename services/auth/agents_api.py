"""The agent-facing auth endpoints: registration, renewal and the JWKS. Each handler
parses, calls one operation of enrolment.py and renders."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

from services.auth import enrolment
from services.auth import state as auth_state
from services.common import audit
from services.common.errors import invalid_token
from services.common.http import client_address
from services.common.validation import Str, StrMap, printable, read_json_object, rfc3339, take

_SECRET = Str(1, 512)


async def register(request: Request) -> JSONResponse:
    state = auth_state.of(request)
    body = await read_json_object(request)
    new = enrolment.Registration(
        token=take(body, "registration_token", _SECRET),
        machine_id=take(body, "machine_id", Str(1, 256)),
        hostname=take(body, "hostname", printable(255, 1)),
        os=take(body, "os", printable(64), ""),
        arch=take(body, "arch", printable(64), ""),
        agent_version=take(body, "agent_version", printable(64), ""),
        labels=take(body, "labels", StrMap(key=printable(255, 1)), {}),
    )
    client = client_address(request, state.settings.trusted_proxies)
    # Per address, what is limited is failure (a guesser's refused tokens); a valid token is
    # bounded by its uses already, and a site behind one address enrols a thousand at once.
    async with state.registration_failures.failures(client, counted=(enrolment.TokenRefused,)), \
            state.registration_limit.successes(client):
        creds, _ = await enrolment.register(state.db, new, state.settings.refresh_token_ttl_s,
                                            _origin(request, client))
    # Signed only after the commit: a token never names an agent that was rolled back.
    access, access_expires = state.signer.access_token(str(creds.agent_id), new.machine_id)
    keyset = await enrolment.current_keyset(state.db)
    return JSONResponse(
        {
            "agent_id": str(creds.agent_id),
            "access_token": access,
            "access_token_expires_at": rfc3339(access_expires),
            "refresh_token": creds.refresh_token,
            "refresh_token_expires_at": rfc3339(creds.refresh_token_expires_at),
            "poll_interval_s": state.settings.poll_interval_s,
            # For agents that pin the command-signing root on first use (checked against
            # the fingerprint they were given, or over verified TLS).
            "command_keyset": keyset,
            "root_public_key": state.settings.command_root_public_key,
        },
        status_code=201,
    )


async def renew(request: Request) -> JSONResponse:
    """Rotation: every renewal consumes the token presented and returns its successor; the
    access token is signed after the renewal commits."""
    state = auth_state.of(request)
    body = await read_json_object(request)
    agent_id = take(body, "agent_id", Str(1, 64))
    presented = take(body, "refresh_token", _SECRET)
    machine_id = request.headers.get("x-machine-id", "")
    try:
        agent_uuid = uuid.UUID(agent_id)
    except ValueError:
        raise invalid_token("The refresh token does not belong to this agent.") from None
    client = client_address(request, state.settings.trusted_proxies)
    # Refusals are limited per address; the agent's own allowance is spent only once its
    # token is known (counted first: a burst racing one token is held to the limit), so
    # someone else's made-up tokens for this agent id never cost it its renewal.
    async with state.renew_failures.failures(client, counted=(enrolment.TokenRefused, enrolment.TokenReused)):
        creds, _ = await enrolment.renew(state.db, agent_uuid, presented, machine_id,
                                         state.settings.refresh_token_ttl_s, _origin(request, client),
                                         admit=lambda: state.renew_limit.check(str(agent_uuid)))
    access, access_expires = state.signer.access_token(str(agent_uuid), machine_id)
    return JSONResponse(
        {
            "access_token": access,
            "access_token_expires_at": rfc3339(access_expires),
            "refresh_token": creds.refresh_token,
            "refresh_token_expires_at": rfc3339(creds.refresh_token_expires_at),
        }
    )


def _origin(request: Request, address: str) -> audit.Context:
    """Where an agent's request came from, for its security events (the actor is set then)."""
    return audit.Context(audit.Actor("agent", None, ""), request.headers.get("x-request-id"), address)


async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(auth_state.of(request).signer.jwks(), headers={"Cache-Control": "max-age=300"})
