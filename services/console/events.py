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

from services.console.api import Refused, Unavailable
from services.console.sessions import COOKIE
from services.console.web import NoSuchPage, audit_filters, path_id

STREAM_S = 20.0
EVERY_S = 1.0
RECONNECT_MS = 1000

Read = Callable[[str], Awaitable[dict]]


async def _stream(request: Request, event: str, read: Read) -> Response:
    console = request.app.state.console
    session_id = request.cookies.get(COOKIE)
    try:
        signed_in = await console.sessions.get(session_id) is not None
    except (Refused, Unavailable):
        signed_in = False
    if not signed_in:
        return Response(status_code=204)  # an EventSource stops reconnecting on 204

    async def events() -> AsyncIterator[ServerSentEvent]:
        last, until = None, time.monotonic() + STREAM_S
        yield ServerSentEvent(comment="live", retry=RECONNECT_MS)
        while time.monotonic() < until:
            try:
                session = await console.sessions.get(session_id)
                if session is None:  # signed out, ended, disabled: the stream stops
                    return
                data = json.dumps(await read(session.token), sort_keys=True)
            except (Refused, Unavailable):
                return  # the page shows what is wrong when it is reloaded
            if data != last:
                yield ServerSentEvent(data=data, event=event)
                last = data
            await asyncio.sleep(EVERY_S)

    return EventSourceResponse(events(), ping=10, send_timeout=10)


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
        return {"commands": [{"id": c["id"], "status": c["status"],
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
