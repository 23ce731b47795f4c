"""Agent release endpoints through the gateway (docs/api.md, agent releases): who may
upload and delete, what a download honours (Range, 416, no authentication, a limit per
address), and hostile input answered 4xx with nothing changed."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

import pytest

from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.support import HTTP

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/octet-stream"}


def zipapp(size: int = 300_000) -> bytes:
    out = io.BytesIO()
    out.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(out, "a", zipfile.ZIP_STORED) as z:
        z.writestr("__main__.py", "print('hello')\n")
        z.writestr("payload.bin", os.urandom(size))
    return out.getvalue()


def _upload(stack, data: bytes, version="1.4.0", platform="linux-x86_64", who=None):
    return stack.api("POST", f"/agent-releases?version={version}&platform={platform}", who or ADMIN, content=data)


def _download(stack, version="1.4.0", platform="linux-x86_64", **headers):
    return HTTP.get(f"{stack.url}/api/v1/agent-releases/{version}/{platform}", headers=headers)


def operator_token(stack, role: str) -> str:
    made = stack.api("POST", "/operators", json={"name": f"an-{role}", "role": role}).json()
    return stack.api("POST", f"/operators/{made['id']}/tokens", json={}).json()["token"]


def _count(sql) -> int:
    return sql.execute("SELECT count(*) FROM agent_releases").fetchone()[0]


def test_an_admin_uploads_anyone_downloads_whole_or_a_range(fleet_stack, sql):
    data = zipapp()
    r = _upload(fleet_stack, data)
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest() and r.json()["size"] == len(data)
    listed = fleet_stack.api("GET", "/agent-releases").json()["releases"]
    assert [(x["version"], x["platform"]) for x in listed] == [("1.4.0", "linux-x86_64")]
    whole = _download(fleet_stack)  # no Authorization header at all
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["etag"] == f'"{r.json()["sha256"]}"'
    part = _download(fleet_stack, Range="bytes=1000-2047")
    assert part.status_code == 206 and part.content == data[1000:2048]
    assert part.headers["content-range"] == f"bytes 1000-2047/{len(data)}"
    tail = _download(fleet_stack, Range=f"bytes={len(data) - 10}-")
    assert tail.status_code == 206 and tail.content == data[-10:]
    past = _download(fleet_stack, Range=f"bytes={len(data)}-")
    assert past.status_code == 416 and past.json()["error"] == "range_not_satisfiable"
    assert past.headers["content-range"] == f"bytes */{len(data)}"
    assert _download(fleet_stack, version="9.9.9").status_code == 404
    # The same version and platform again is refused, never replaced.
    again = _upload(fleet_stack, zipapp())
    assert again.status_code == 409 and _download(fleet_stack).content == data
    assert fleet_stack.api("DELETE", "/agent-releases/1.4.0/linux-x86_64").status_code == 204
    assert _download(fleet_stack).status_code == 404
    assert fleet_stack.api("DELETE", "/agent-releases/1.4.0/linux-x86_64").status_code == 404
    actions = [row[0] for row in sql.execute(
        "SELECT action FROM audit_events WHERE action LIKE 'release.%' ORDER BY at")]
    assert actions == ["release.upload", "release.delete"]


def test_only_an_admin_uploads_or_deletes(fleet_stack, sql):
    assert _upload(fleet_stack, zipapp()).status_code == 201
    for role in ("operator", "viewer"):
        token = operator_token(fleet_stack, role)
        who = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
        assert _upload(fleet_stack, zipapp(), version="1.5.0", who=who).status_code == 403
        assert fleet_stack.api("DELETE", "/agent-releases/1.4.0/linux-x86_64", who).status_code == 403
    assert _upload(fleet_stack, zipapp(), version="1.5.0", who={"Content-Type": "application/octet-stream"}
                   ).status_code == 401
    assert _count(sql) == 1


@pytest.mark.parametrize("version, platform, body, status", [
    ("1.4.0", "linux-x86_64", b"", 400),
    ("1.4.0", "linux-x86_64", b"MZ not a zip at all" * 100, 400),
    ("../../etc", "linux-x86_64", None, 400),
    ("1.4.0", "linux x86_64", None, 400),
    ("1.4.0", "", None, 400),
    ("", "linux-x86_64", None, 400),
    ("1.4.0%00", "linux-x86_64", None, 400),
    ("1" * 65, "linux-x86_64", None, 400),
])
def test_hostile_uploads_are_refused_and_change_nothing(fleet_stack, sql, version, platform, body, status):
    r = _upload(fleet_stack, zipapp() if body is None else body, version=version, platform=platform)
    assert r.status_code == status, r.text
    assert r.json()["error"] == "invalid_request"
    assert _count(sql) == 0


@pytest.mark.parametrize("stack_env", [{"FLEETLINE_RELEASE_DOWNLOAD_RATE_LIMIT": "3/minute"}])
def test_downloads_are_limited_per_address(fleet_stack, stack_env):
    assert _upload(fleet_stack, zipapp(1000)).status_code == 201
    answers = [_download(fleet_stack, Range="bytes=0-0").status_code for _ in range(5)]
    assert answers[:3] == [206, 206, 206] and answers[3:] == [429, 429]


def test_a_release_over_the_limit_is_refused_at_the_gateway(start_service, start_gateway, sql):
    auth = start_service("services.auth")
    dispatch = start_service("services.dispatch", FLEETLINE_JWKS_URL=f"{auth.url}/.well-known/jwks.json")
    gw = start_gateway([auth.url], [dispatch.url], FLEETLINE_MAX_RELEASE_BYTES="2000000")
    big = HTTP.post(f"{gw.url}/api/v1/admin/agent-releases?version=1.4.0&platform=linux-x86_64", headers=ADMIN,
                    content=zipapp(2_100_000))
    assert big.status_code == 413 and "2000000" in big.json()["detail"]
    # A release is the one body allowed past FLEETLINE_MAX_BODY_BYTES (1 MiB by default).
    fits = HTTP.post(f"{gw.url}/api/v1/admin/agent-releases?version=1.4.0&platform=linux-x86_64", headers=ADMIN,
                     content=zipapp(1_200_000))
    assert fits.status_code == 201, fits.text
    over_body = HTTP.post(f"{gw.url}/api/v1/admin/commands", headers=ADMIN, content=b"x" * 1_100_000)
    assert over_body.status_code == 413
    assert _count(sql) == 1
