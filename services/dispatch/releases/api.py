"""Agent release endpoints (docs/api.md, agent releases and self-upgrade): an admin
uploads, lists and deletes; anyone downloads (releases are not secrets: their integrity
comes from the digest inside a signed upgrade command, or the one printed with the
install line), per address rate limited, with `Range`."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from typing import AsyncIterator, Pattern

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from fleetline.ethos import Log
from fleetline.release_names import PLATFORM, VERSION, file_name
from services.common import audit
from services.common.errors import ApiError, invalid, not_found
from services.common.http import client_address
from services.common.validation import read_body, rfc3339
from services.dispatch import state as dispatch_state
from services.dispatch.releases import queries as q
from services.dispatch.releases.ranges import Unsatisfiable, byte_range

_log = Log("dispatch", "releases")
SLICE = 1024 * 1024  # bytes read from the database per step of a download


def release_view(row) -> dict:
    return {"version": row["version"], "platform": row["platform"], "sha256": row["sha256"],
            "size": row["size"], "created_at": rfc3339(row["created_at"]), "created_by": row["created_by"]}


def _named(value: str | None, pattern: Pattern[str], name: str, example: str) -> str:
    if value is None or not pattern.fullmatch(value):
        raise invalid(f"{name} must look like {example} (letters, digits and . + _ -).", name)
    return value


def _zipapp(data: bytes) -> bool:
    """A zipapp (what make agent-release writes) and not something else by mistake."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return "__main__.py" in z.namelist()
    except zipfile.BadZipFile:
        return False


async def upload(request: Request) -> JSONResponse:
    state = dispatch_state.of(request)
    version = _named(request.query_params.get("version"), VERSION, "version", "1.4.0")
    platform = _named(request.query_params.get("platform"), PLATFORM, "platform", "linux-x86_64")
    limit = state.settings.max_release_bytes
    data = await read_body(request, limit, f"A release is at most {limit} bytes (FLEETLINE_MAX_RELEASE_BYTES).")
    if not data:
        raise invalid("The body must be the release file (application/octet-stream).", "body")
    if not await asyncio.to_thread(_zipapp, data):
        raise invalid("The body is not a zipapp with a __main__.py (make agent-release builds one).", "body")
    digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    ctx: audit.Context = request.state.audit
    async with state.db.transaction():
        row = await state.db.fetchrow(q.CREATE_RELEASE, version, platform, digest, len(data), data, ctx.actor.name)
        if row is None:
            raise ApiError(409, "conflict", f"Release {version} for {platform} exists; delete it first to replace it.")
        await audit.record(state.db, ctx, "release.upload", "agent_release", f"{version}/{platform}", details={
            "version": version, "platform": platform, "sha256": digest, "size": len(data)})
    _log.info("release_uploaded", version=version, platform=platform, size=len(data), sha256=digest)
    return JSONResponse(release_view(row), status_code=201)


async def list_releases(request: Request) -> JSONResponse:
    rows = await dispatch_state.of(request).db.fetch(q.LIST_RELEASES)
    return JSONResponse({"releases": [release_view(r) for r in rows]})


async def delete(request: Request) -> Response:
    state = dispatch_state.of(request)
    version, platform = request.path_params["version"], request.path_params["platform"]
    async with state.db.transaction():
        row = await state.db.fetchrow(q.DELETE_RELEASE, version, platform)
        if row is None:
            raise not_found("No such release.")
        await audit.record(state.db, request.state.audit, "release.delete", "agent_release", f"{version}/{platform}", details={
            "version": version, "platform": platform, "sha256": row["sha256"]})
    return Response(status_code=204)


async def download(request: Request) -> Response:
    state = dispatch_state.of(request)
    version, platform = request.path_params["version"], request.path_params["platform"]
    client = client_address(request, state.settings.trusted_proxies)
    headers = await state.download_limit.check(client)
    found = await state.db.fetchrow(q.RELEASE_SIZE, version, platform) \
        if VERSION.fullmatch(version) and PLATFORM.fullmatch(platform) else None
    if found is None:
        raise not_found("No such release.")
    size = found["size"]
    headers.update({"Accept-Ranges": "bytes", "ETag": f'"{found["sha256"]}"',
                    "Content-Disposition": f'attachment; filename="{file_name(version, platform)}"'})
    try:
        span = byte_range(request.headers.get("range"), size)
    except Unsatisfiable:
        raise ApiError(416, "range_not_satisfiable", f"The release is {size} bytes; the range starts past its end.",
                       headers={**headers, "Content-Range": f"bytes */{size}"}) from None
    first, last = span if span is not None else (0, size - 1)
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(last - first + 1)

    async def body() -> AsyncIterator[bytes]:
        at = first
        while at <= last:
            chunk = await state.db.fetchval(q.RELEASE_SLICE, version, platform, at, min(SLICE, last - at + 1))
            if not chunk:  # deleted while it was being read: the body ends short
                return
            yield chunk
            at += len(chunk)

    return StreamingResponse(body(), status_code=206 if span is not None else 200,
                             media_type="application/octet-stream", headers=headers)
