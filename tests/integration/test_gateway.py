"""The gateway against real upstream processes."""

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from fleetline.cli.pgembed import free_port
from tests.integration.conftest import ADMIN_TOKEN, create_registration_token, register
from tests.integration.support import HTTP, ROOT, wait_until

DEAD = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused


@pytest.fixture
def stub(tmp_path):
    procs = []

    def start(mode):
        port = free_port()
        count = tmp_path / f"count-{port}"
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.integration.upstream_stub", "--port", str(port),
                                       "--mode", mode, "--count-file", str(count)], cwd=ROOT))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url), 15, what="stub")
        return url, count

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _up(url):
    try:
        return HTTP.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_routes_every_api_path_to_its_service(start_gateway, auth, dispatch, fleet):
    gw = start_gateway([auth.url], [dispatch.url])
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tok = create_registration_token(gw.url)  # POST registration-tokens through the gateway
    reg = register(gw.url, tok["token"], "m-gw")
    assert reg.status_code == 201
    agent = reg.json()
    ah = {"Authorization": f"Bearer {agent['access_token']}", "X-Machine-ID": "m-gw"}
    cmd = HTTP.post(f"{gw.url}/api/v1/admin/commands", headers=admin,
                     json={"agent_id": agent["agent_id"], "type": "ping"}).json()
    checks = [
        ("POST", "/api/v1/agents/renew", {"X-Machine-ID": "m-gw"},
         {"agent_id": agent["agent_id"], "refresh_token": agent["refresh_token"]}, 200),
        ("GET", "/.well-known/jwks.json", {}, None, 200),
        ("GET", "/api/v1/admin/registration-tokens", admin, None, 200),
        ("DELETE", f"/api/v1/admin/registration-tokens/{tok['id']}", admin, None, 204),
        ("GET", "/api/v1/admin/agents", admin, None, 200),
        ("GET", f"/api/v1/admin/agents/{agent['agent_id']}", admin, None, 200),
        ("GET", f"/api/v1/agents/{agent['agent_id']}/commands", ah, None, 200),
        ("POST", f"/api/v1/agents/{agent['agent_id']}/commands/{cmd['id']}/ack", ah, None, 200),
        ("POST", f"/api/v1/agents/{agent['agent_id']}/commands/{cmd['id']}/result", ah,
         {"status": "succeeded", "exit_code": 0}, 200),
        ("GET", "/api/v1/admin/commands", admin, None, 200),
        ("GET", f"/api/v1/admin/commands/{cmd['id']}", admin, None, 200),
        ("POST", f"/api/v1/admin/commands/{cmd['id']}/cancel", admin, None, 409),
        ("DELETE", f"/api/v1/admin/agents/{agent['agent_id']}", admin, None, 204),
    ]
    for method, path, headers, body, status in checks:
        resp = HTTP.request(method, gw.url + path, headers=headers, json=body)
        assert resp.status_code == status, (method, path, resp.text)
    for path in ("/", "/api/v1/nope", "/api/v2/agents/register", "/api/v1/admin"):
        resp = HTTP.get(gw.url + path)
        assert (resp.status_code, resp.json()["error"]) == (404, "not_found"), path
    for path in ("/healthz", "/readyz", "/metrics"):
        assert HTTP.get(gw.url + path).status_code == 200


def test_oversize_bodies_are_413_with_or_without_a_length(start_gateway, auth, dispatch, sql):
    gw = start_gateway([auth.url], [dispatch.url], FLEETLINE_MAX_BODY_BYTES="1000")
    big = b'{"note": "' + b"x" * 5000 + b'"}'

    def chunks():
        for i in range(0, len(big), 100):
            yield big[i:i + 100]

    url = f"{gw.url}/api/v1/admin/registration-tokens"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for content in (big, chunks()):
        resp = HTTP.post(url, content=content, headers=admin)
        assert (resp.status_code, resp.json()["error"]) == (413, "payload_too_large")
    assert HTTP.post(url, json={"note": "small"}, headers=admin).status_code == 201
    assert sql.execute("SELECT count(*) FROM registration_tokens").fetchone()[0] == 1
    assert "unhandled_exception" not in gw.log() and "unhandled_exception" not in auth.log()


def test_large_and_chunked_bodies_stream_through_intact(start_gateway, auth, dispatch, sql):
    gw = start_gateway([auth.url], [dispatch.url])
    url = f"{gw.url}/api/v1/admin/registration-tokens"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    # Unknown fields are ignored, so a big padding field must arrive intact for a 201.
    big = json.dumps({"max_uses": 7, "note": "streamed", "padding": "p" * 300_000}).encode()

    def chunks():
        for i in range(0, len(big), 4096):
            yield big[i:i + 4096]

    for content in (big, chunks()):
        resp = HTTP.post(url, content=content, headers=admin)
        assert resp.status_code == 201, resp.text
        assert (resp.json()["max_uses"], resp.json()["note"]) == (7, "streamed")
    cut = json.dumps({"max_uses": 7, "padding": "p" * 300_000}).encode()[:-10]
    resp = HTTP.post(url, content=cut, headers=admin)  # arrives whole but is not JSON
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_request")
    assert sql.execute("SELECT count(*) FROM registration_tokens").fetchone()[0] == 2


def test_dead_replica_is_skipped_and_all_dead_is_502(start_gateway, auth, dispatch):
    gw = start_gateway([DEAD, auth.url], [dispatch.url])
    for _ in range(6):
        assert HTTP.get(f"{gw.url}/.well-known/jwks.json").status_code == 200
    gw_dead = start_gateway([DEAD], [dispatch.url])
    resp = HTTP.get(f"{gw_dead.url}/.well-known/jwks.json")
    assert (resp.status_code, resp.json()["error"]) == (502, "upstream_unavailable")
    assert HTTP.get(f"{gw_dead.url}/readyz").status_code == 503


def test_a_console_that_is_down_leaves_the_api_ready_and_console_paths_502(start_gateway, auth, dispatch):
    gw = start_gateway([auth.url], [dispatch.url], FLEETLINE_CONSOLE_URLS=DEAD)
    assert HTTP.get(f"{gw.url}/readyz").status_code == 200  # agents keep their gateway
    resp = HTTP.get(f"{gw.url}/console/agents")
    assert (resp.status_code, resp.json()["error"]) == (502, "upstream_unavailable")
    no_console = start_gateway([auth.url], [dispatch.url])
    assert HTTP.get(f"{no_console.url}/console/").status_code == 404


def test_slow_upstream_is_504(start_gateway, stub, dispatch):
    slow, _ = stub("slow")
    gw = start_gateway([slow], [dispatch.url], FLEETLINE_UPSTREAM_TIMEOUT_S="1")
    resp = HTTP.get(f"{gw.url}/.well-known/jwks.json", timeout=20)
    assert (resp.status_code, resp.json()["error"]) == (504, "upstream_timeout")


def test_a_request_that_reached_an_upstream_is_never_retried(start_gateway, stub, dispatch):
    drop_a, count_a = stub("drop")
    drop_b, count_b = stub("drop")
    gw = start_gateway([drop_a, drop_b], [dispatch.url])
    resp = HTTP.post(f"{gw.url}/api/v1/agents/register", json={"x": 1}, timeout=20)
    assert (resp.status_code, resp.json()["error"]) == (502, "upstream_unavailable")
    seen = sum(len(p.read_text().splitlines()) for p in (count_a, count_b) if p.exists())
    assert seen == 1


def test_request_id_forwarded_headers_and_hop_by_hop(start_gateway, stub, dispatch):
    echo, _ = stub("echo")
    gw = start_gateway([echo], [dispatch.url])
    resp = HTTP.get(f"{gw.url}/.well-known/jwks.json",
                     headers={"X-Request-ID": "trace-123", "X-Forwarded-For": "10.9.9.9",
                              "Connection": "keep-alive, x-drop-me", "X-Drop-Me": "1"})
    seen = resp.json()
    assert resp.headers.get_list("x-request-id") == ["trace-123"]
    assert seen["x-request-id"] == ["trace-123"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]  # a client's own hops are not believed
    assert "x-drop-me" not in seen  # named in Connection: hop-by-hop, not forwarded
    assert "x-secret-hop" not in resp.headers
    assert resp.headers.get_list("set-cookie") == ["a=1", "b=2"]
    again = HTTP.get(f"{gw.url}/.well-known/jwks.json").json()
    assert "cookie" not in again  # the upstream's cookies never come back from the gateway
    generated = HTTP.get(f"{gw.url}/nope").headers.get_list("x-request-id")
    assert len(generated) == 1 and len(generated[0]) == 32


def test_forwarded_for_is_extended_only_from_a_trusted_proxy_in_front(start_gateway, stub, dispatch):
    echo, _ = stub("echo")
    gw = start_gateway([echo], [dispatch.url], FLEETLINE_GATEWAY_TRUSTED_PROXIES="127.0.0.1")
    seen = HTTP.get(f"{gw.url}/.well-known/jwks.json", headers={"X-Forwarded-For": "10.9.9.9"}).json()
    assert seen["x-forwarded-for"] == ["10.9.9.9, 127.0.0.1"]


def test_past_its_capacity_the_gateway_answers_503_with_retry_after_and_recovers(start_gateway, auth,
                                                                                 dispatch, fleet):
    gw = start_gateway([auth.url], [dispatch.url], FLEETLINE_GATEWAY_MAX_REQUESTS="2")
    agents = [fleet.register() for _ in range(2)]
    polls = ThreadPoolExecutor(2)
    held = [polls.submit(HTTP.get, f"{gw.url}/api/v1/agents/{a.agent_id}/commands?wait=20",
                         headers=a.headers, timeout=30) for a in agents]
    wait_until(lambda: _in_flight(gw.url) == 2, 15, what="two held polls")
    full = HTTP.get(f"{gw.url}/api/v1/agents/{agents[0].agent_id}/commands", headers=agents[0].headers)
    assert full.status_code == 503 and full.headers["retry-after"] == "5"
    assert full.json()["error"] == "not_ready" and full.headers["x-request-id"]
    assert HTTP.get(f"{gw.url}/readyz").status_code == 200  # its own paths still answer
    # A queued command ends one held poll; the slot it frees serves the next request.
    fleet.queue(agents[0])
    assert held[0].result(timeout=15).status_code == 200
    wait_until(lambda: _in_flight(gw.url) == 1, 15, what="one poll left")
    assert HTTP.get(f"{gw.url}/api/v1/admin/agents", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                    ).status_code == 200
    fleet.queue(agents[1])
    assert held[1].result(timeout=15).status_code == 200
    polls.shutdown()


def _in_flight(url: str) -> float:
    text = HTTP.get(url + "/metrics").text
    return float(re.search(r"^fleetline_gateway_requests_in_flight (\S+)$", text, re.M).group(1))
