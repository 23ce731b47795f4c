"""The gateway's edge, attacked for real: stalled and slow connections from one address,
TLS handshakes that never finish, bodies cut short, and plain HTTP where it must not be."""

import asyncio
import re
import selectors
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from fleetline.transport import tls_context
from tests.integration.conftest import tls_env
from tests.integration.support import HTTP, ROOT, wait_until

STALLS = {
    # Connected, never a byte.
    "silent": b"",
    # Headers that never end.
    "headers": b"GET /api/v1/admin/agents HTTP/1.1\r\nHost: gateway\r\nX-Slow: 1\r\n",
    # Complete headers, then a body that stops early.
    "body": (b"POST /api/v1/agents/register HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
             b"Content-Length: 200\r\n\r\n{\"registration_token\": \"x"),
}


def _stall(source: str, port: int, kind: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    if STALLS[kind]:
        sock.sendall(STALLS[kind])
    return sock


def _closed_after(sock: socket.socket, opened: float, deadline: float) -> tuple[float, bytes]:
    """Seconds from opening until the gateway closed it, and what it said first (a blocking
    read: TLS sockets included)."""
    received = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            chunk = b""
        except TimeoutError:
            return float("inf"), received
        if not chunk:
            return time.monotonic() - opened, received
        received += chunk


def _watch(socks: list[tuple[socket.socket, float]], deadline: float) -> list[tuple[float, bytes]]:
    """For each (socket, opened): seconds until the gateway closed it, and what it said;
    all watched at once, so each close is timed when it happens."""
    selector = selectors.DefaultSelector()
    results: list[tuple[float, bytes]] = [(float("inf"), b"")] * len(socks)
    for i, (sock, _) in enumerate(socks):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, i)
    open_count = len(socks)
    while open_count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            i = key.data
            sock, opened = socks[i]
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except BlockingIOError:
                continue
            if chunk:
                results[i] = (results[i][0], results[i][1] + chunk)
                continue
            results[i] = (time.monotonic() - opened, results[i][1])
            selector.unregister(sock)
            open_count -= 1
    selector.close()
    return results


def _health(sock: socket.socket) -> bytes:
    """The whole answer to a GET /healthz already sent."""
    received = b""
    while not received.endswith(b'{"status": "ok"}'):
        received += sock.recv(65536)
    return received


def _metric(url: str, name: str) -> float:
    text = HTTP.get(url + "/metrics").text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_stalled_connections_from_one_address_never_refuse_another_and_all_close_within_15s(
        start_gateway, auth, dispatch, fleet, sql):
    # A capacity of 20 requests: body-stalled connections would fill it if they counted.
    gw = start_gateway([auth.url], [dispatch.url], FLEETLINE_GATEWAY_MAX_REQUESTS="20")
    agent = fleet.register()
    agents_before = sql.execute("SELECT count(*) FROM agents").fetchone()[0]
    kinds = ["body", "headers", "silent"]
    stalled = []
    for i in range(200):
        stalled.append((_stall("127.0.0.2", gw.port, kinds[i % 3]), time.monotonic(), kinds[i % 3]))

    watcher = ThreadPoolExecutor(1).submit(_watch, [(sock, opened) for sock, opened, _ in stalled],
                                           time.monotonic() + 20)
    # Meanwhile an agent on another address polls through the gateway, held polls included.
    polls = []
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), base_url=gw.url,
                      headers=agent.headers, timeout=30) as client:
        for wait in (0, 0, 1, 0, 2, 0, 3):
            polls.append(client.get(f"/api/v1/agents/{agent.agent_id}/commands", params={"wait": wait}))
    assert [p.status_code for p in polls] == [200] * len(polls), [p.text for p in polls]

    outcomes = [(kind, *seen) for (_, _, kind), seen in zip(stalled, watcher.result(timeout=30), strict=True)]
    for sock, _, _ in stalled:
        sock.close()
    assert max(seconds for _, seconds, _ in outcomes) <= 15, outcomes
    # Once stalled (2 s), past 64 from 127.0.0.2, the address's oldest were closed: 136 of
    # them, soon after stalling; the first half opened are all among them.
    early = [i for i, o in enumerate(outcomes) if o[1] < 6]
    assert len(early) == 200 - 64, outcomes
    assert set(range(100)) <= set(early)
    assert all(outcomes[i][1] >= 1.9 for i in early)  # never before they stalled
    assert _metric(gw.url, "fleetline_gateway_stalled_connections_closed") == 200 - 64
    # The rest were answered 408 once their headers or body ran out of time (10 s).
    late = [o for i, o in enumerate(outcomes) if i not in early]
    assert all(o[2].startswith(b"HTTP/1.1 408") and b'"request_timeout"' in o[2] for o in late)
    assert {o[0] for o in late} == {"silent", "headers", "body"}
    assert all(o[1] >= 9 for o in late)  # the deadline is 10 s, not sooner
    # The cut-off bodies reached no service: nothing registered, nothing failed.
    assert sql.execute("SELECT count(*) FROM agents").fetchone()[0] == agents_before
    assert "unhandled_exception" not in gw.log() + auth.log()
    wait_until(lambda: _metric(gw.url, "fleetline_gateway_stalled_connections") == 0, 5,
               what="no connection left stalled")


def test_a_thousand_connections_from_one_address_at_once_are_all_answered(start_gateway, auth, dispatch,
                                                                          fleet):
    """A site behind NAT reconnecting at once (a gateway restart, an office waking up): every
    connection completes its request within milliseconds, so none is stalled and none closed."""
    gw = start_gateway([auth.url], [dispatch.url])
    agents = [fleet.register() for _ in range(10)]

    async def burst() -> list[int | str]:
        async def one(i: int) -> int | str:
            agent = agents[i % len(agents)]
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
                writer.write((f"GET /api/v1/agents/{agent.agent_id}/commands HTTP/1.1\r\nHost: g\r\n"
                              f"Authorization: Bearer {agent.access_token}\r\n"
                              f"X-Machine-ID: {agent.machine_id}\r\nConnection: close\r\n\r\n").encode())
                answer = await reader.read()
                writer.close()
                return int(answer.split(b" ", 2)[1])
            except OSError as exc:
                return type(exc).__name__

        return await asyncio.gather(*(one(i) for i in range(1000)))

    statuses = asyncio.run(burst())
    assert statuses == [200] * 1000, sorted(set(map(str, statuses)))
    assert _metric(gw.url, "fleetline_gateway_stalled_connections_closed") == 0


def test_stalled_connections_beside_fresh_ones_from_the_same_address_never_cost_a_fresh_one(
        start_gateway, auth, dispatch, fleet):
    # Deadlines far beyond the test: the 64 stalled ones left must still be there at its end,
    # however long a loaded machine takes to answer the 300.
    gw = start_gateway([auth.url], [dispatch.url], FLEETLINE_HEADER_TIMEOUT_S="120", FLEETLINE_BODY_TIMEOUT_S="120")
    agent = fleet.register()
    stalled = [(_stall("127.0.0.2", gw.port, ("silent", "headers", "body")[i % 3]), time.monotonic())
               for i in range(100)]
    # Stalled: past the cap of 64, the 36 oldest go.
    wait_until(lambda: _metric(gw.url, "fleetline_gateway_stalled_connections_closed") == 36, 10,
               what="the oldest stalled connections closed")
    assert _metric(gw.url, "fleetline_gateway_stalled_connections") == 64

    async def fresh() -> list[int]:
        # Each on its own connection, closed once answered: a kept-alive connection idle for
        # 2 s is stalled too (a loaded machine answering 300 slowly would make it one).
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"),
                                     base_url=gw.url, headers={**agent.headers, "Connection": "close"},
                                     timeout=30,
                                     limits=httpx.Limits(max_connections=300)) as client:
            answers = await asyncio.gather(*(client.get(f"/api/v1/agents/{agent.agent_id}/commands")
                                             for _ in range(300)), return_exceptions=True)
        return [a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers]

    assert asyncio.run(fresh()) == [200] * 300
    # Only stalled ones were ever closed, and the 64 left are still there.
    assert _metric(gw.url, "fleetline_gateway_stalled_connections_closed") == 36
    survivors = _watch(stalled, time.monotonic() + 0.2)
    assert sum(1 for seconds, _ in survivors if seconds == float("inf")) == 64
    for sock, _ in stalled:
        sock.close()


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_stalled_bodies_take_no_capacity_from_other_clients(start_gateway, auth, dispatch, fleet, framing):
    """Streamed bodies (chunked, or longer than 64 KiB) that stall used to hold a share of
    the gateway's capacity from their first byte: 25 of them filled a gateway of 20."""
    gw = start_gateway([auth.url], [dispatch.url], FLEETLINE_GATEWAY_MAX_REQUESTS="20")
    agent = fleet.register()
    head = b"POST /api/v1/agents/renew HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n"
    if framing == "chunked":
        head += b"Transfer-Encoding: chunked\r\n\r\n1000\r\n" + b" " * 4096 + b"\r\n"
    else:
        head += b"Content-Length: 200000\r\n\r\n" + b" " * 70000
    stalled = []
    for _ in range(25):
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.connect(("127.0.0.1", gw.port))
        sock.sendall(head)
        stalled.append(sock)
    statuses = []
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), base_url=gw.url,
                      headers=agent.headers, timeout=30) as client:
        deadline = time.monotonic() + 4  # across the moment they stall
        while time.monotonic() < deadline:
            statuses.append(client.get(f"/api/v1/agents/{agent.agent_id}/commands").status_code)
    assert len(statuses) >= 20 and set(statuses) == {200}, statuses
    assert _metric(gw.url, "fleetline_gateway_requests_in_flight") == 0
    for sock in stalled:
        sock.close()


def test_a_slow_body_is_408_and_a_kept_alive_connection_idles_only_as_long_as_allowed(
        start_gateway, auth, dispatch):
    gw = start_gateway([auth.url], [dispatch.url], FLEETLINE_HEADER_TIMEOUT_S="1",
                       FLEETLINE_BODY_TIMEOUT_S="1", FLEETLINE_KEEPALIVE_S="2",
                       FLEETLINE_UPSTREAM_KEEPALIVE_S="1")
    sock = _stall("127.0.0.1", gw.port, "body")
    opened = time.monotonic()
    seconds, said = _closed_after(sock, opened, opened + 10)
    assert 0.9 <= seconds < 3 and said.startswith(b"HTTP/1.1 408")
    assert re.search(rb"x-request-id: [0-9a-f]{32}", said)
    # A complete request, then the next one's headers never finish: 408 too.
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n")
    assert _health(sock).startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: g\r\n")
    started = time.monotonic()
    seconds, said = _closed_after(sock, started, started + 10)
    assert seconds < 3 and said.startswith(b"HTTP/1.1 408")
    # Idle after a complete request: closed when the keep-alive time runs out.
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n")
    assert _health(sock).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    seconds, said = _closed_after(sock, started, started + 10)
    assert 1.5 < seconds < 4 and said == b""


def test_the_gateway_serves_tls_verified_by_its_ca_and_cuts_off_stalled_handshakes(
        start_gateway, auth, dispatch, tls_dir):
    gw = start_gateway([auth.url], [dispatch.url], FLEETLINE_HEADER_TIMEOUT_S="1", **tls_env(tls_dir))
    assert gw.url.startswith("https://")
    with httpx.Client(verify=tls_context(str(tls_dir / "ca.pem"))) as client:
        assert client.get(gw.url + "/.well-known/jwks.json").status_code == 200
        assert client.get(gw.url.replace("127.0.0.1", "localhost") + "/healthz").status_code == 200
    with httpx.Client(verify=tls_context(str(tls_dir / "other" / "ca.pem"))) as stranger:
        try:
            stranger.get(gw.url + "/healthz")
            raise AssertionError("a certificate from another CA was accepted")
        except httpx.ConnectError as exc:
            assert "CERTIFICATE_VERIFY_FAILED" in str(exc)
    # Plain HTTP on the TLS port gets nowhere.
    with socket.create_connection(("127.0.0.1", gw.port)) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n")
        plain.settimeout(5)
        assert b"200" not in plain.recv(1024)
    # A handshake that never starts, and one finished but never followed by headers.
    silent = socket.create_connection(("127.0.0.1", gw.port))
    opened = time.monotonic()
    assert _closed_after(silent, opened, opened + 10)[0] < 3
    wrapped = tls_context(str(tls_dir / "ca.pem")).wrap_socket(
        socket.create_connection(("127.0.0.1", gw.port)), server_hostname="127.0.0.1")
    opened = time.monotonic()
    wrapped.sendall(b"GET /healthz HTTP/1.1\r\n")
    seconds, said = _closed_after(wrapped, opened, opened + 10)
    assert seconds < 3 and said.startswith(b"HTTP/1.1 408")
    assert "unhandled_exception" not in gw.log()


def test_plain_http_on_a_non_loopback_address_is_refused_unless_a_tls_proxy_is_declared(
        start_gateway, auth, dispatch, tmp_path, base_env):
    env = {**base_env, "FLEETLINE_AUTH_URLS": auth.url, "FLEETLINE_DISPATCH_URLS": dispatch.url}
    env = {k: v for k, v in env.items()}
    refused = subprocess.run([sys.executable, "-m", "gateway", "--host", "0.0.0.0", "--port", "0"],
                             cwd=ROOT, env={**_clean_env(), **env}, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    assert "[ERROR] [gateway] [config] invalid_configuration" in refused.stderr
    assert "refusing to serve plain HTTP on 0.0.0.0" in refused.stderr
    allowed = start_gateway([auth.url], [dispatch.url], host="0.0.0.0", FLEETLINE_ALLOW_PLAINTEXT="1")
    assert HTTP.get(allowed.url + "/healthz").status_code == 200


def test_a_tls_certificate_without_its_key_stops_the_gateway_with_one_line(auth, dispatch, base_env, tls_dir):
    env = {**_clean_env(), **base_env, "FLEETLINE_AUTH_URLS": auth.url, "FLEETLINE_DISPATCH_URLS": dispatch.url,
           "FLEETLINE_TLS_CERT_FILE": str(tls_dir / "gateway.pem")}
    done = subprocess.run([sys.executable, "-m", "gateway", "--port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "go together" in done.stderr and "Traceback" not in done.stderr


def _clean_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}


def test_tls_context_refuses_a_server_name_the_certificate_does_not_carry(start_gateway, auth, dispatch,
                                                                          tls_dir):
    gw = start_gateway([auth.url], [dispatch.url], **tls_env(tls_dir))
    context = tls_context(str(tls_dir / "ca.pem"))
    with socket.create_connection(("127.0.0.1", gw.port)) as raw:
        try:
            context.wrap_socket(raw, server_hostname="fleet.example.com")
            raise AssertionError("a certificate for other names was accepted")
        except ssl.SSLCertVerificationError:
            pass
