"""The agent-facing dispatch endpoints: the poll, ack, result, live output and the keyset.
Each handler authenticates and parses, makes one call (to long_poll.py, to the lifecycle,
to the output room) and renders a view."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

from fleetline.ethos import Log
from services.common.errors import ApiError, forbidden, invalid, not_found
from services.common.tokens import AgentIdentity
from services.common.validation import (
    Bool,
    Int,
    JsonObject,
    Str,
    nullable,
    parse_timestamp,
    path_id,
    path_uuid,
    printable,
    query_choice,
    query_int,
    read_json_object,
    rfc3339,
    take,
)
from services.dispatch import state as dispatch_state
from services.dispatch.agents import queries as q
from services.dispatch.lifecycle import commands, jobs
from services.dispatch.output import chunks as output
from services.dispatch.output.rules import MAX_CHUNK_BYTES
from services.dispatch.signing import keysets
from services.dispatch.views import delivery_view, state_view

_report_log = Log("dispatch", "report")

MAX_OUTPUT_BYTES = 64 * 1024
MAX_FACTS_BYTES, MAX_FACTS_DEPTH = 64 * 1024, 8


async def _authenticate(request: Request) -> AgentIdentity:
    """401/403 checks in docs/api.md's order: credential, machine, then the path's agent id."""
    identity = await dispatch_state.of(request).verifier.authenticate_agent(request)
    # The token's sub is canonical; parse the path only when it is spelled differently.
    if request.path_params["agent_id"] != identity.agent_id and path_uuid(request, "agent_id") != identity.agent_id:
        raise forbidden("agent_mismatch", "The path names another agent than the token's.")
    return identity


async def poll(request: Request) -> JSONResponse:
    state = dispatch_state.of(request)
    identity = await _authenticate(request)
    limit = query_int(request, "limit", 1, 100, 10)
    # Claims nothing, answers cancels only: an agent whose slots are all busy holds these.
    if query_choice(request, "cancels_only", ("true", "false")) == "true":
        limit = 0
    wait = query_int(request, "wait", 0, state.settings.max_wait_s, 0)
    # Keyed by the verified token's agent, never by the path.
    headers = await state.checkin_limit.check(identity.agent_id)
    # Valid credentials, a valid request: from now on the machine is not registered again.
    await state.first_use.mark(identity.agent_id)
    # Seen when it checks in, and again when a held poll answers: an agent holding a poll
    # is there the whole time (the console shows it online from its first poll).
    state.last_seen.mark(identity.agent_id)
    claim = await state.polls.poll(identity.agent_id, limit, wait, request.receive)
    if claim is None:  # the client left while held: nobody to answer, nothing was claimed
        return JSONResponse({"commands": [], "poll_interval_s": state.settings.poll_interval_s})
    if wait > 0:
        state.last_seen.mark(identity.agent_id)
    answer: dict = {"commands": [delivery_view(r) for r in claim.commands], "poll_interval_s": claim.poll_interval_s,
                    "facts_interval_s": state.settings.facts_interval_s}
    if claim.cancels:  # only when there are some: the answer of 1.2 stays as it was otherwise
        answer["cancels"] = claim.cancels
    if claim.refresh_facts:
        answer["refresh_facts"] = True
    return JSONResponse(answer, headers=headers)


async def _command_target(request: Request) -> tuple[AgentIdentity, uuid.UUID, uuid.UUID]:
    identity = await _authenticate(request)
    command_id = path_id(request, "command_id", "command for this agent")
    return identity, uuid.UUID(identity.agent_id), command_id


async def ack(request: Request) -> JSONResponse:
    state = dispatch_state.of(request)
    identity, agent_uuid, command_uuid = await _command_target(request)
    headers = await state.report_limit.check(identity.agent_id)
    await state.first_use.mark(identity.agent_id)
    command = await commands.ack(state.db, agent_uuid, command_uuid)
    return JSONResponse(state_view(command), headers=headers)


async def result(request: Request) -> JSONResponse:
    state = dispatch_state.of(request)
    identity, agent_uuid, command_uuid = await _command_target(request)
    body = await read_json_object(request)
    outcome = take(body, "status", Str(1, 16, choices=commands.OUTCOMES))
    exit_code = take(body, "exit_code", nullable(Int(-(2**31), 2**31 - 1)), None)
    output = take(body, "output", Str(0, MAX_OUTPUT_BYTES), "")
    if len(output.encode("utf-8")) > MAX_OUTPUT_BYTES:
        raise invalid(f"output must be at most {MAX_OUTPUT_BYTES} bytes of UTF-8.", "output")
    started_at = take(body, "started_at", nullable(parse_timestamp), None)
    finished_at = take(body, "finished_at", nullable(parse_timestamp), None)
    cancelled = take(body, "cancelled", Bool, False)  # a cancel the agent verified ended it
    headers = await state.report_limit.check(identity.agent_id)
    await state.first_use.mark(identity.agent_id)

    reported = {"exit_code": exit_code, "output": output,
                "started_at": rfc3339(started_at), "finished_at": rfc3339(finished_at)}
    command, ended = await commands.report(state.db, agent_uuid, command_uuid, outcome, reported, cancelled)
    if ended:
        _report_log.info("command_finished", agent_id=identity.agent_id, command_id=command_uuid,
                         status=command["status"], exit_code=exit_code)
        if command["job_id"] is not None:  # its job's window has room, or it may halt
            await jobs.advance(state.db, command["job_id"])
    return JSONResponse(state_view(command), headers=headers)


async def append_output(request: Request) -> JSONResponse:
    """A chunk of a running command's output. Counted against the same limit as acks and
    results: streaming cannot buy an agent more requests than reporting."""
    state = dispatch_state.of(request)
    identity, agent_uuid, command_uuid = await _command_target(request)
    body = await read_json_object(request)
    offset = take(body, "offset", Int(0, 2**53))
    data = take(body, "data", Str(0, MAX_CHUNK_BYTES))
    if len(data.encode("utf-8")) > MAX_CHUNK_BYTES:
        raise invalid(f"data must be at most {MAX_CHUNK_BYTES} bytes of UTF-8.", "data")
    headers = await state.report_limit.check(identity.agent_id)
    await state.first_use.mark(identity.agent_id)
    answer = await output.append(state.db, agent_uuid, command_uuid, offset, data, state.settings.max_output_bytes)
    return JSONResponse(answer, headers=headers)


async def put_facts(request: Request) -> JSONResponse:
    """What the agent reports of its machine (docs/api.md): a JSON object of at most 64 KiB
    and depth 8, replacing the last. Data, never instructions: stored and shown escaped."""
    state = dispatch_state.of(request)
    identity = await _authenticate(request)
    body = await read_json_object(request)
    facts = take(body, "facts", JsonObject(MAX_FACTS_BYTES, MAX_FACTS_DEPTH))
    headers = await state.report_limit.check(identity.agent_id)
    await state.first_use.mark(identity.agent_id)
    version = facts.get("agent_version")
    try:  # the same rule as at registration; anything else leaves the version as it was
        version = printable(64, 1)(version, "facts.agent_version") if version is not None else None
    except ApiError:
        version = None
    updated = await state.db.fetchval(q.PUT_FACTS, uuid.UUID(identity.agent_id), facts, version)
    if updated is None:
        raise forbidden("agent_revoked", "This agent has been revoked.")
    return JSONResponse({"facts_updated_at": rfc3339(updated)}, headers=headers)


async def keyset(request: Request) -> JSONResponse:
    """The current keyset (signed by the root key) for an agent that met an unknown kid."""
    identity = await dispatch_state.of(request).verifier.authenticate_agent(request)
    await dispatch_state.of(request).first_use.mark(identity.agent_id)
    document = await keysets.for_agent(dispatch_state.of(request).db, uuid.UUID(identity.agent_id))
    if document is None:
        raise not_found("No command keyset is installed.")
    return JSONResponse(document)
