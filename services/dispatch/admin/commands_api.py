"""Operator endpoints of dispatch: create (idempotent), list (cursor paging), get, cancel.
Mounted behind the admin guard (app.py): none of them checks the admin token itself."""

from __future__ import annotations

import dataclasses
import functools
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

from fleetline.ethos import Log
from fleetline.signing import NotCanonical, check_signable
from services.common.db import Db
from services.common.errors import conflict, invalid
from services.common.paging import decode_cursor, next_cursor
from services.common.validation import (
    Int,
    JsonObject,
    Str,
    nullable,
    parse_uuid,
    path_id,
    query_choice,
    query_int,
    read_json_object,
    take,
)
from services.dispatch import state as dispatch_state
from services.dispatch.lifecycle import commands, jobs
from services.dispatch.output import chunks as output
from services.dispatch.releases import catalog
from services.dispatch.releases import rules as upgrades
from services.dispatch.signing import keysets
from services.dispatch.signing.signer import BadKeyset, read_keyset
from services.dispatch.views import state_view

_log = Log("dispatch", "admin")


def read_command(body: dict, agent_id: uuid.UUID | None, within: str = "") -> commands.NewCommand:
    """A command's settings from a request body (a job's `command` object too), checked,
    defaults filled in, params signable."""
    field = functools.partial(take, body, within=within)
    new = commands.NewCommand(
        agent_id=agent_id,
        type=field("type", Str(1, 64, pattern=r"[a-z0-9_.-]+")),
        params=field("params", JsonObject(65536), {}),
        priority=field("priority", Int(-100, 100), 0),
        ttl_s=field("ttl_s", Int(1, 2592000), 14400),
        max_retries=field("max_retries", Int(0, 100), 5),
        ack_timeout_s=field("ack_timeout_s", Int(1, 86400), 300),
        run_timeout_s=field("run_timeout_s", Int(1, 604800), 3600),
        idempotency_key=None,
    )
    try:
        check_signable(new.params, "params")
    except NotCanonical as exc:
        raise invalid(f"params cannot be signed: {exc}", f"{within}params") from None
    if new.type == upgrades.UPGRADE:
        try:
            upgrades.check_params(new.params)
        except upgrades.BadUpgrade as exc:
            raise invalid(f"{exc}.", f"{within}params.{exc.field}") from None
    return new


async def require_release(db: Db, new: commands.NewCommand, within: str = "") -> None:
    """An upgrade names a release that was uploaded (for some platform): a typo is refused
    here, not reported failed by every agent of the fleet."""
    if new.type == upgrades.UPGRADE and not await catalog.has_version(db, new.params["version"]):
        raise invalid(f"No release {new.params['version']} has been uploaded (fleetline releases upload).",
                      f"{within}params.version")


async def create_command(request: Request) -> JSONResponse:
    body = await read_json_object(request)
    agent_id = uuid.UUID(take(body, "agent_id", parse_uuid))
    new = dataclasses.replace(
        read_command(body, agent_id),
        idempotency_key=take(body, "idempotency_key", nullable(Str(1, 255)), None))
    state = dispatch_state.of(request)
    await require_release(state.db, new)
    row, created = await commands.create(state.db, new, state.signer, request.state.operator, request.state.audit,
                                         await state.approval_policy.get())
    if created:
        _log.info("command_queued", command_id=row["id"], agent_id=new.agent_id, type=new.type)
    return JSONResponse(state_view(row), status_code=201 if created else 200)


async def list_commands(request: Request) -> JSONResponse:
    db, params = dispatch_state.of(request).db, request.query_params
    agent_id = params.get("agent_id") or None
    agent_uuid = uuid.UUID(parse_uuid(agent_id, "agent_id")) if agent_id else None
    status = query_choice(request, "status", commands.STATUSES)
    limit = query_int(request, "limit", 1, 1000, 100)
    rows = await commands.page(db, decode_cursor(params.get("before")), limit, agent_uuid, status,
                               request.state.operator.scope)
    return JSONResponse({"commands": [state_view(r) for r in rows[:limit]],
                         "next": next_cursor(rows, limit)})


def _command_id(request: Request) -> uuid.UUID:
    return path_id(request, "command_id", "command")


async def get_command(request: Request) -> JSONResponse:
    return JSONResponse(state_view(await commands.get(dispatch_state.of(request).db, _command_id(request),
                                                      request.state.operator.scope)))


async def command_output(request: Request) -> JSONResponse:
    """The command's output from `offset`; with `wait`, held like a poll until it grows or
    the command ends (output/followers.py), at no cost while parked."""
    state = dispatch_state.of(request)
    command_id = _command_id(request)
    offset = query_int(request, "offset", 0, 999_999_999, 0)
    wait = query_int(request, "wait", 0, state.settings.max_wait_s, 0)
    scope = request.state.operator.scope

    async def read_page() -> output.Page:
        state.output_reads.inc()  # one statement pair each: none while parked (the metric shows it)
        return await output.read(state.db, command_id, offset, scope)

    page = await state.followers.follow(str(command_id), wait, request.receive, read_page,
                                        holder=str(request.state.operator.id))
    if page is None:  # the client left
        return JSONResponse({})
    return JSONResponse(page.view())


async def cancel_command(request: Request) -> JSONResponse:
    command_id = _command_id(request)
    state = dispatch_state.of(request)
    row = await commands.cancel(state.db, command_id, state.signer, request.state.operator, request.state.audit)
    _log.info("command_cancelled", command_id=command_id, status=row["status"])
    if row["job_id"] is not None:
        await jobs.advance(state.db, row["job_id"])
    # 202 for a delivered one (docs/api.md): its agent is told, and a running one ends
    # when the agent reports.
    return JSONResponse(state_view(row), status_code=202 if row["sent_at"] is not None else 200)


async def install_keyset(request: Request) -> JSONResponse:
    """A keyset signed offline by the root key; only above the current version."""
    state = dispatch_state.of(request)
    body = await read_json_object(request)
    try:
        keyset = read_keyset(body, state.settings.needed("command_root_public_key"))
    except BadKeyset as exc:
        raise invalid(str(exc)) from None
    if not await keysets.install(state.db, keyset, request.state.audit):
        raise conflict("This keyset's version is not above the current one.")
    if state.signer.kid not in keyset.kids:
        _log.warning("signing_key_not_in_keyset", kid=state.signer.kid, version=keyset.version)
    _log.info("keyset_installed", version=keyset.version, keys=len(keyset.kids))
    return JSONResponse({"version": keyset.version, **keyset.document})
