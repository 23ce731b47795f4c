"""Bad input on every auth endpoint: a JSON 4xx naming the field, and nothing changed."""

import pytest

from tests.integration.conftest import create_registration_token, register
from tests.integration.dbstate import snapshot
from tests.integration.support import HTTP

BIG = "x" * (512 * 1024)  # far over every field's limit, under the 1 MiB body limit
JUNK = "\ud800\u0000\U0001f600"


@pytest.fixture
def world(auth):
    tok = create_registration_token(auth.url, max_uses=5)
    reg = register(auth.url, tok["token"], "m-bad").json()
    return auth, tok, reg


def _good_register(tok):
    return {"registration_token": tok["token"], "machine_id": "m-new", "hostname": "h"}


REGISTER_CASES = [
    ({"machine_id": "m", "hostname": "h"}, "registration_token"),
    ({"registration_token": 5}, "registration_token"),
    ({"machine_id": ""}, "machine_id"),
    ({"machine_id": "m" * 257}, "machine_id"),
    ({"machine_id": None}, "machine_id"),
    ({"hostname": ""}, "hostname"),
    ({"hostname": BIG}, "hostname"),
    ({"hostname": "a\u0000b"}, "hostname"),
    ({"os": ["linux"]}, "os"),
    ({"labels": "env=prod"}, "labels"),
    ({"labels": {"env": 1}}, "labels"),
    ({"labels": {"env": "a\u0000"}}, "labels"),
    # What an operator's terminal or page shows as it is: no escape sequences, no bidi
    # overrides (a forged table row, a cleared screen, a window title).
    ({"hostname": "web\x1b[2J\x1b[Hroot"}, "hostname"),
    ({"hostname": "web\x1b]0;pwned\x07"}, "hostname"),
    ({"os": "linux\r\nfake-row"}, "os"),
    ({"arch": "x86\u009b31m"}, "arch"),
    ({"agent_version": "1.0\u202e"}, "agent_version"),
    ({"labels": {"env\x1b[31m": "prod"}}, "labels"),
]


def test_register_rejects_bad_fields_and_changes_nothing(world, sql):
    auth, tok, _ = world
    before = snapshot(sql)
    for patch, field in REGISTER_CASES:
        body = {**_good_register(tok), **patch}
        if "registration_token" not in patch and field == "registration_token":
            body.pop("registration_token")
        resp = HTTP.post(f"{auth.url}/api/v1/agents/register", json=body, timeout=30)
        assert resp.status_code == 400, (patch, resp.text)
        assert resp.json()["error"] == "invalid_request"
        assert resp.json()["field"] == field, patch
    assert snapshot(sql) == before


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'"text"', b"{", b"\xff\xfe",
                                 b'{"a": NaN}', b"[" * 100000, JUNK.encode("utf-8", "surrogatepass")])
def test_non_json_bodies_are_invalid_request_everywhere(world, sql, admin_headers, raw):
    auth, _, reg = world
    before = snapshot(sql)
    for path, headers in [("/api/v1/agents/register", {}),
                          ("/api/v1/agents/renew", {"X-Machine-ID": "m-bad"}),
                          ("/api/v1/admin/registration-tokens", admin_headers)]:
        resp = HTTP.post(auth.url + path, content=raw,
                          headers={**headers, "Content-Type": "application/json"})
        assert resp.status_code == 400, (path, raw[:20], resp.text)
        assert resp.json()["error"] == "invalid_request"
    assert snapshot(sql) == before


def test_lone_surrogate_in_json_escape_is_refused(world, sql):
    auth, tok, _ = world
    before = snapshot(sql)
    raw = ('{"registration_token": "%s", "machine_id": "\\ud800", "hostname": "h"}' % tok["token"])
    resp = HTTP.post(f"{auth.url}/api/v1/agents/register", content=raw.encode())
    assert (resp.status_code, resp.json().get("field")) == (400, "machine_id")
    assert snapshot(sql) == before


def test_renew_and_admin_bad_fields(world, sql, admin_headers):
    auth, _, reg = world
    before = snapshot(sql)
    cases = [
        ("/api/v1/agents/renew", {"refresh_token": "x"}, "agent_id"),
        ("/api/v1/agents/renew", {"agent_id": reg["agent_id"], "refresh_token": 7}, "refresh_token"),
        ("/api/v1/agents/renew", {"agent_id": reg["agent_id"], "refresh_token": BIG}, "refresh_token"),
        ("/api/v1/admin/registration-tokens", {"max_uses": 0}, "max_uses"),
        ("/api/v1/admin/registration-tokens", {"max_uses": 100001}, "max_uses"),
        ("/api/v1/admin/registration-tokens", {"max_uses": True}, "max_uses"),
        ("/api/v1/admin/registration-tokens", {"max_uses": "3"}, "max_uses"),
        ("/api/v1/admin/registration-tokens", {"expires_in_s": 59}, "expires_in_s"),
        ("/api/v1/admin/registration-tokens", {"expires_in_s": 31536001}, "expires_in_s"),
        ("/api/v1/admin/registration-tokens", {"expires_in_s": 1.5}, "expires_in_s"),
        ("/api/v1/admin/registration-tokens", {"note": BIG}, "note"),
        ("/api/v1/admin/registration-tokens", {"note": {"a": 1}}, "note"),
    ]
    for path, body, field in cases:
        resp = HTTP.post(auth.url + path, json=body, timeout=30,
                          headers={**admin_headers, "X-Machine-ID": "m-bad"})
        assert resp.status_code == 400, (path, body if len(str(body)) < 200 else field, resp.text)
        assert resp.json()["field"] == field
    assert snapshot(sql) == before


def test_unknown_paths_methods_and_ids_are_json(world, admin_headers, sql):
    auth, _, _ = world
    before = snapshot(sql)
    checks = [
        ("GET", "/nope", {}, 404, "not_found"),
        ("GET", "/api/v1/agents/register", {}, 405, "method_not_allowed"),
        ("DELETE", "/api/v1/admin/agents/not-a-uuid", admin_headers, 404, "not_found"),
        ("DELETE", "/api/v1/admin/agents/00000000-0000-0000-0000-000000000000", admin_headers, 404, "not_found"),
        ("GET", "/api/v1/admin/agents/00000000-0000-0000-0000-000000000000", admin_headers, 404, "not_found"),
        ("DELETE", "/api/v1/admin/registration-tokens/zzz", admin_headers, 404, "not_found"),
        ("GET", "/api/v1/admin/agents", {}, 401, "invalid_token"),
        ("GET", "/api/v1/admin/agents", {"Authorization": "Bearer wrong"}, 401, "invalid_token"),
        ("GET", "/api/v1/admin/agents", {"Authorization": "Basic abc"}, 401, "invalid_token"),
        ("POST", "/api/v1/admin/registration-tokens", {"Authorization": "Bearer \u00e9".encode("latin-1")}, 401, "invalid_token"),
    ]
    for method, path, headers, status, code in checks:
        resp = HTTP.request(method, auth.url + path, headers=headers, json={})
        assert (resp.status_code, resp.json()["error"]) == (status, code), (method, path)
        assert resp.headers["x-request-id"]
    assert snapshot(sql) == before
