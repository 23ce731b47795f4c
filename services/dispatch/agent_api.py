"""The agent-facing dispatch endpoints: the poll, ack and result. Each handler parses,
makes one call to the state machine (commands.py) and renders a view."""

from __future__ import annotations

import asyncio
import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

from fleetline.ethos import Log
from services.common.errors import forbidden, invalid, not_found
from services.common.tokens import AgentIdentity
from services.common.validation import (
    Int, Str, nullable, parse_timestamp, path_uuid, query_int, read_json_object, rfc3339, take,
)
from services.dispatch import commands
from services.dispatch.views import delivery_view, state_view
from services.dispatch.wakeups import departure

_log = Log("dispatch", "poll")
_report_log = Log("dispatch", "report")

# While a long poll waits, it re-checks at least this often (redeliveries come due on
# their own; new commands wake it at once through NOTIFY).
RECHECK_S = 5.0
MAX_OUTPUT_BYTES = 64 * 1024


async def _authenticate(request: Request) -> AgentIdentity:
    """401/403 checks in API.md's order: credential, machine, then the path's agent id."""
    identity = await request.app.state.verifier.authenticate_agent(request)
    # The token's sub is canonical; parse the path only when it is spelled differently.
    if request.path_params["agent_id"] != identity.agent_id and path_uuid(request, "agent_id") != identity.agent_id:
        raise forbidden("agent_mismatch", "The path names another agent than the token's.")
    return identity


async def poll(request: Request) -> JSONResponse:
    state = request.app.state
    identity = await _authenticate(request)
    limit = query_int(request, "limit", 1, 100, 10)
    wait = query_int(request, "wait", 0, 60, 0)
    # Keyed by the verified token's agent, never by the path.
    headers = await state.checkin_limit.check(identity.agent_id)

    agent_uuid = uuid.UUID(identity.agent_id)
    deadline = time.monotonic() + wait
    departed: asyncio.Future | None = None  # ends when the client goes away
    try:
        while True:
            claim = await commands.claim(state.db, agent_uuid, limit, state.poll_policy)
            remaining = deadline - time.monotonic()
            if claim.commands or remaining <= 0:
                break
            departed = departed or asyncio.ensure_future(departure(request.receive))
            await state.wakeups.wait(identity.agent_id, min(remaining, RECHECK_S), departed)
            if departed.done():
                # Nobody would receive what we claimed now: claim nothing.
                _log.debug("poll_abandoned", agent_id=identity.agent_id)
                return JSONResponse({"commands": [], "poll_interval_s": claim.poll_interval_s})
    finally:
        if departed is not None:
            departed.cancel()

    state.last_seen.mark(identity.agent_id)
    if claim.commands:
        state.claimed_total.inc(len(claim.commands))
    return JSONResponse(
        {"commands": [delivery_view(r) for r in claim.commands],
         "poll_interval_s": claim.poll_interval_s},
        headers=headers,
    )


async def _command_target(request: Request) -> tuple[AgentIdentity, uuid.UUID, uuid.UUID]:
    identity = await _authenticate(request)
    command_id = path_uuid(request, "command_id")
    if command_id is None:
        raise not_found("No such command for this agent.")
    return identity, uuid.UUID(identity.agent_id), uuid.UUID(command_id)


async def ack(request: Request) -> JSONResponse:
    state = request.app.state
    identity, agent_uuid, command_uuid = await _command_target(request)
    headers = await state.report_limit.check(identity.agent_id)
    command = await commands.ack(state.db, agent_uuid, command_uuid)
    return JSONResponse(state_view(command), headers=headers)


async def result(request: Request) -> JSONResponse:
    state = request.app.state
    identity, agent_uuid, command_uuid = await _command_target(request)
    body = await read_json_object(request)
    outcome = take(body, "status", Str(1, 16, choices=commands.OUTCOMES))
    exit_code = take(body, "exit_code", nullable(Int(-(2**31), 2**31 - 1)), None)
    output = take(body, "output", Str(0, MAX_OUTPUT_BYTES), "")
    if len(output.encode("utf-8")) > MAX_OUTPUT_BYTES:
        raise invalid(f"output must be at most {MAX_OUTPUT_BYTES} bytes of UTF-8.", "output")
    started_at = take(body, "started_at", nullable(parse_timestamp), None)
    finished_at = take(body, "finished_at", nullable(parse_timestamp), None)
    headers = await state.report_limit.check(identity.agent_id)

    reported = {"exit_code": exit_code, "output": output,
                "started_at": rfc3339(started_at), "finished_at": rfc3339(finished_at)}
    command, ended = await commands.report(state.db, agent_uuid, command_uuid, outcome, reported)
    if ended:
        _report_log.info("command_finished", agent_id=identity.agent_id, command_id=command_uuid,
                         status=outcome, exit_code=exit_code)
    return JSONResponse(state_view(command), headers=headers)
