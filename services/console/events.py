"""Live updates: server-sent events the pages' script applies without reloading.

Each stream reads the admin API once a second and sends what changed. A stream ends after
STREAM_S (the browser's EventSource reconnects at once), so no request outlives the
gateway's upstream timeout and a signed-out session stops being served within seconds."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from fleetline import statuses
from services.console.api import Refused, Unavailable
from services.console.sessions import COOKIE
from services.console.web import NoSuchPage, audit_filters, path_id

STREAM_S = 20.0
EVERY_S = 1.0
HOLD_S = 10  # an output stream's held read of the API
RECONNECT_MS = 1000

Read = Callable[[str], Awaitable[dict]]


Produce = Callable[[Callable[[], Awaitable[str | None]]], AsyncIterator[ServerSentEvent]]


async def _serve(request: Request, produce: Produce) -> Response:
    """A stream for a signed-in session: `produce(token)` yields its events, calling
    `token()` (the session's bearer, None once it ended) before each read of the API."""
    console = request.app.state.console
    session_id = request.cookies.get(COOKIE)
    try:
        signed_in = await console.sessions.get(session_id) is not None
    except (Refused, Unavailable):
        signed_in = False
    if not signed_in:
        return Response(status_code=204)  # an EventSource stops reconnecting on 204

    async def token() -> str | None:
        session = await console.sessions.get(session_id)  # signed out, ended, disabled: None
        return session.token if session is not None else None

    async def events() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(comment="live", retry=RECONNECT_MS)
        try:
            async for event in produce(token):
                yield event
        except (Refused, Unavailable):
            return  # the page shows what is wrong when it is reloaded

    return EventSourceResponse(events(), ping=10, send_timeout=10)


async def _stream(request: Request, event: str, read: Read) -> Response:
    """`read(token)` once a second; an event each time its answer changed."""

    async def produce(token: Callable[[], Awaitable[str | None]]) -> AsyncIterator[ServerSentEvent]:
        last, until = None, time.monotonic() + STREAM_S
        while time.monotonic() < until:
            bearer = await token()
            if bearer is None:
                return
            data = json.dumps(await read(bearer), sort_keys=True)
            if data != last:
                yield ServerSentEvent(data=data, event=event)
                last = data
            await asyncio.sleep(EVERY_S)

    return await _serve(request, produce)


def _resume_offset(request: Request) -> int:
    """Where an output stream resumes: the last event's id the browser saw (it sends it on
    reconnecting), else 0. Anything else than a small number starts over."""
    raw = request.headers.get("last-event-id", "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else 0


async def output_events(request: Request) -> Response:
    """A command's output as it grows: the API's held read (no polling while nothing
    arrives), each piece an `output` event whose id is where the next one starts; then
    `complete` once the command has ended and everything was sent."""
    try:
        command_id = path_id(request, "command_id")
    except NoSuchPage:
        return Response(status_code=204)
    api, start = request.app.state.console.api, _resume_offset(request)

    async def produce(token: Callable[[], Awaitable[str | None]]) -> AsyncIterator[ServerSentEvent]:
        offset, until = start, time.monotonic() + STREAM_S
        while (left := until - time.monotonic()) > 0:
            bearer = await token()
            if bearer is None:
                return
            page = await api.call(bearer, "GET", f"/commands/{command_id}/output",
                                  params={"offset": offset, "wait": max(1, min(HOLD_S, int(left)))},
                                  timeout=HOLD_S + 15)
            if page["data"]:
                yield ServerSentEvent(data=json.dumps({"offset": page["offset"], "data": page["data"]}),
                                      event="output", id=str(page["next_offset"]))
            offset = page["next_offset"]
            if page["complete"]:
                yield ServerSentEvent(data=json.dumps({"truncated": page["truncated"]}), event="complete")
                return

    return await _serve(request, produce)


async def job_events(request: Request) -> Response:
    try:
        job_id = path_id(request, "job_id")
    except NoSuchPage:
        return Response(status_code=204)
    status = request.query_params.get("status")
    api = request.app.state.console.api

    async def read(token: str) -> dict[str, Any]:
        params: dict = {"limit": 100}
        if status:
            params["status"] = status
        job = await api.call(token, "GET", f"/jobs/{job_id}")
        targets = await api.call(token, "GET", f"/jobs/{job_id}/targets", params=params)
        return {"job": _progress(job), "targets": [
            {"id": t["agent_id"], "status": t["status"],
             "exit_code": (t["result"] or {}).get("exit_code")} for t in targets["targets"]]}

    return await _stream(request, "job", read)


async def jobs_events(request: Request) -> Response:
    api = request.app.state.console.api

    async def read(token: str) -> dict[str, Any]:
        page = await api.call(token, "GET", "/jobs", params={"limit": 50})
        return {"jobs": [_progress(j) for j in page["jobs"]]}

    return await _stream(request, "jobs", read)


async def agent_events(request: Request) -> Response:
    try:
        agent_id = path_id(request, "agent_id")
    except NoSuchPage:
        return Response(status_code=204)
    api = request.app.state.console.api

    async def read(token: str) -> dict[str, Any]:
        page = await api.call(token, "GET", "/commands", params={"agent_id": agent_id, "limit": 20})
        return {"commands": [{"id": c["id"], "status": statuses.shown(c),
                              "exit_code": (c["result"] or {}).get("exit_code")} for c in page["commands"]]}

    return await _stream(request, "commands", read)


async def audit_events(request: Request) -> Response:
    """The newest events matching the page's filters (an admin's; anyone else's stream ends
    at the API's 403)."""
    api, filters = request.app.state.console.api, audit_filters(request)

    async def read(token: str) -> dict[str, Any]:
        return await api.call(token, "GET", "/audit", params={**filters, "limit": 50})

    return await _stream(request, "audit", read)


def _progress(job: dict) -> dict:
    return {k: job[k] for k in ("id", "status", "counts", "target_count", "finished_at")}
