"""The gateway: a small reverse proxy as a pure ASGI app, with aiohttp as upstream client.

aiohttp because it was measured (bench/gateway_bench.py, bench/README.md): httpx's pool tops
out near 400 req/s as a proxy client here. Small responses are buffered (a streamed
Starlette response costs ~40 %); large or unsized ones are streamed. Request bodies are
read whole (up to the body limit) before anything goes upstream.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import resource
import time
from typing import Any, Sequence

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from fleetline.ethos import Log
from fleetline.http import Metrics, departure, error_bytes, header_value, request_id_from
from fleetline.settings import Settings
from gateway import openapi
from gateway.edge import Stalls
from gateway.routes import RELEASE_DOWNLOADS, RELEASE_UPLOAD, held_seconds, route
from gateway.upstreams import Upstream

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length",
})
BUFFER_LIMIT = 256 * 1024  # responses up to this size (with a length) are buffered
_log = Log("gateway", "proxy")
# The console's proof that it is the console (FLEETLINE_CONSOLE_PROXY_SECRET), on its calls.
CONSOLE_PROXY_HEADER = b"fleetline-console-proxy"
LOCAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
OPENAPI_BYTES = json.dumps(openapi.DOCUMENT).encode()
# Past its capacity the gateway answers 503 with this Retry-After (the agent adds its own
# jitter), instead of failing to accept connections once its open files run out.
FULL_RETRY_AFTER_S = 5
FILES_KEPT_FREE = 256  # for idle upstream connections, connections being replaced, logs


def capacity(settings: Settings) -> int:
    """Requests carried at once: the setting, else what the open-file limit allows at two
    sockets a request (the client's and the upstream's)."""
    if settings.gateway_max_requests is not None:
        return settings.gateway_max_requests
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, (soft - FILES_KEPT_FREE) // 2)


class PayloadTooLarge(Exception):
    pass


class ClientGone(Exception):
    """The client left (or was cut off by the edge's body deadline) before its body ended:
    nothing of it may reach an upstream."""


async def read_body(receive: Any, limit: int) -> bytes:
    """The client's whole body, refused past `limit`. Read in full before anything is sent
    upstream: a client that stalls in its body holds no upstream connection and no share of
    the gateway's capacity (only the edge's deadline and its per-address cap apply)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            raise PayloadTooLarge
        if not message.get("more_body", False):
            return bytes(body)


def _json_error(status: int, code: str, detail: str) -> tuple[int, bytes]:
    return status, error_bytes(code, detail)


class Gateway:
    def __init__(self, settings: Settings, edge: Stalls):
        settings.require("auth_urls", "dispatch_urls")
        self.settings = settings
        self.edge = edge
        self.upstreams = {
            "auth": Upstream("auth", settings.auth_urls),
            "dispatch": Upstream("dispatch", settings.dispatch_urls),
        }
        if settings.console_urls:  # optional: without one, /console/ is a 404
            self.upstreams["console"] = Upstream("console", settings.console_urls)
        self.metrics = Metrics("gateway")
        self.capacity = 0  # set at startup, once serve() has raised the file limit
        self.in_flight = 0
        self.metrics.gauge("fleetline_gateway_requests_in_flight",
                           "Requests this gateway process is carrying upstream", lambda: self.in_flight)
        self.metrics.gauge("fleetline_gateway_stalled_connections",
                           "Connections waiting 2 s or more without a complete request "
                           "(handshake, headers, body, idle)", edge.count)
        self.metrics.gauge("fleetline_gateway_stalled_connections_closed",
                           "Stalled connections closed because their address had too many (the oldest first)",
                           lambda: edge.closed)
        self.metrics.gauge("fleetline_gateway_request_timeouts",
                           "Connections cut off for slow headers, body or TLS handshake",
                           lambda: edge.timed_out)
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[int, aiohttp.ClientTimeout] = {}

    # --- lifecycle -------------------------------------------------------------------

    async def startup(self) -> None:
        self.capacity = capacity(self.settings)
        # The DNS cache is what spreads upstream connections over every address of a
        # replica set behind one name (a headless service): aiohttp's cache hands each new
        # connection the addresses rotated by one (_DNSCacheTable.next_addrs), and names
        # are resolved again every 5 minutes. Each address gets its own ~28,000 ephemeral
        # ports (docs/operations.md).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300,
                                         keepalive_timeout=self.settings.upstream_keepalive_s),
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry one client's cookie to another
            auto_decompress=False,  # pass bodies through byte for byte
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The upstream client, made at startup (in the event loop it serves)."""
        assert self._session is not None, "the gateway has not started"
        return self._session

    async def ready(self) -> bool:
        async def replica_ready(url: str) -> bool:
            try:
                async with self.session.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    return r.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False

        # The API's services only: agents must not lose the gateway because the console is down.
        for upstream in (self.upstreams["auth"], self.upstreams["dispatch"]):
            results = await asyncio.gather(*(replica_ready(u) for u in upstream.urls))
            if not any(results):
                return False
        return True

    # --- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        headers = scope["headers"]
        rid = request_id_from(header_value(headers, b"x-request-id"))
        service = route(scope["path"])
        if service not in self.upstreams:  # a console path with no console configured
            service = None
        status = 500
        started = False

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if service is None:
                status = await self._local(scope, receive, tracked_send, rid)
            else:
                status = await self._proxy(service, scope, receive, tracked_send, rid)
        except Exception as exc:  # the gateway's one 500: JSON, with the request id, logged once
            _log.error("unhandled_exception", method=scope["method"], path=scope["path"],
                       request_id=rid, exception=type(exc).__name__, error=exc, exc_info=exc)
            if not started:
                status, body = _json_error(500, "internal", "An internal error occurred; it has been logged.")
                await _send_simple(send, status, body, rid)
        finally:
            self.metrics.observe(service or "gateway", status, time.perf_counter() - t0)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _local(self, scope: dict, receive: Any, send: Any, rid: str) -> int:
        """The gateway's own GET paths: health, readiness, metrics and the contract."""
        path, method = scope["path"], scope["method"]
        content_type = b"application/json"
        extra: list[tuple[bytes, bytes]] = []
        if path not in LOCAL_PATHS:
            status, body = _json_error(404, "not_found", "No such path.")
        elif method != "GET":
            status, body = _json_error(405, "method_not_allowed", "This method is not allowed on this path.")
            extra = [(b"allow", b"GET")]
        elif path == "/healthz":
            status, body = 200, b'{"status": "ok"}'
        elif path == "/readyz":
            if await self.ready():
                status, body = 200, b'{"status": "ready"}'
            else:
                status, body = _json_error(503, "not_ready", "A service has no ready replica.")
        elif path == "/openapi.json":
            status, body = 200, OPENAPI_BYTES
        else:
            status, body = 200, generate_latest(self.metrics.registry)
            content_type = CONTENT_TYPE_LATEST.encode()
        await _send_simple(send, status, body, rid, content_type, extra)
        return status

    def _limit(self, scope: dict) -> int:
        if scope["path"] == RELEASE_UPLOAD and scope["method"] == "POST":
            return self.settings.max_release_bytes
        return self.settings.max_body_bytes

    async def _body(self, scope: dict, receive: Any) -> bytes:
        """The whole body; past the limit 413, before reading a byte when its declared
        length says so."""
        limit = self._limit(scope)
        declared = header_value(scope["headers"], b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise PayloadTooLarge
        return await read_body(receive, limit)

    def _timeout(self, extra: int) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(extra)
        if timeout is None:  # at most FLEETLINE_MAX_WAIT_S + 1 distinct values: made once each
            timeout = self._timeouts[extra] = aiohttp.ClientTimeout(total=self.settings.upstream_timeout_s + extra)
        return timeout

    def _from_console(self, presented: bytes | None) -> bool:
        secret = self.settings.console_proxy_secret
        return secret is not None and presented is not None and hmac.compare_digest(presented, secret.encode())

    def _upstream_headers(self, scope: dict, rid: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        forwarded_for = console_proxy = None
        drop = _hop_by_hop(scope["headers"])
        for name, value in scope["headers"]:
            if name in drop or name == b"x-request-id":
                continue
            if name == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1")
                continue
            if name == CONSOLE_PROXY_HEADER:  # never goes further
                console_proxy = value
                continue
            out.append((name.decode("latin-1"), value.decode("latin-1")))
        client = scope.get("client")
        addr = client[0] if client else "unknown"
        # The edge: a client's own X-Forwarded-For is believed (and extended) only from a
        # proxy in front of the gateway that we trust, or from the console, which proves
        # itself with the secret the two share and names the browser it serves; anyone
        # else's is replaced, so nobody chooses the address the services key limits by.
        if forwarded_for and self._from_console(console_proxy):
            out.append(("X-Forwarded-For", forwarded_for.rsplit(",", 1)[-1].strip()))
        elif forwarded_for and addr in self.settings.gateway_trusted_proxies:
            out.append(("X-Forwarded-For", f"{forwarded_for}, {addr}"))
        else:
            out.append(("X-Forwarded-For", addr))
        out.append(("X-Forwarded-Proto", scope.get("scheme", "http")))
        out.append(("X-Request-ID", rid))
        return out

    async def _proxy(self, service: str, scope: dict, receive: Any, send: Any, rid: str) -> int:
        too_large = _json_error(413, "payload_too_large", f"The body is larger than {self._limit(scope)} bytes.")
        try:
            body = await self._body(scope, receive)
        except PayloadTooLarge:
            await _send_simple(send, *too_large, rid)
            return too_large[0]
        except ClientGone:
            return 499  # nobody to answer, and nothing forwarded
        # A request counts against capacity once it is complete, body included: stalled
        # clients take none of it.
        if self.in_flight >= self.capacity:
            status, payload = _json_error(503, "not_ready", "The gateway is at capacity; retry later.")
            await _send_simple(send, status, payload, rid,
                               extra=[(b"retry-after", str(FULL_RETRY_AFTER_S).encode())])
            return status
        self.in_flight += 1
        try:
            return await self._forward(service, scope, receive, send, rid, body)
        finally:
            self.in_flight -= 1

    async def _forward(self, service: str, scope: dict, receive: Any, send: Any, rid: str,
                       body: bytes) -> int:
        upstream = self.upstreams[service]
        target = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        headers = self._upstream_headers(scope, rid)
        held = held_seconds(scope, self.settings.max_wait_s)
        timeout = self._timeout(held)
        if scope["path"].startswith(RELEASE_DOWNLOADS):
            # A release to a slow link takes as long as it takes; only silence ends it.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.upstream_timeout_s,
                                            sock_read=self.settings.upstream_timeout_s)

        for url in upstream.candidates():
            try:
                # encoded=True: the client's path and query go upstream byte for byte.
                request = self.session.request(
                    scope["method"], URL(url + target, encoded=True), headers=headers,
                    data=body or None,
                    timeout=timeout, allow_redirects=False,
                )
                if held:
                    resp = await _unless_client_leaves(request, receive)
                    if resp is None:
                        # Closing the upstream connection tells the service its client left
                        # (a held poll then claims nothing); nobody is left to answer.
                        _log.debug("client_left", service=service, request_id=rid)
                        return 499
                else:
                    resp = await request
            except aiohttp.ClientConnectorError as exc:
                # Never sent: safe to try the next replica.
                upstream.mark_down(url)
                _log.warning("upstream_unreachable", service=service, upstream=url, error=exc)
                continue
            except asyncio.TimeoutError:
                _log.warning("upstream_timeout", service=service, upstream=url, request_id=rid)
                status, payload = _json_error(504, "upstream_timeout", f"{service} did not answer in time.")
                await _send_simple(send, status, payload, rid)
                return status
            except aiohttp.ClientError as exc:
                # The request may have reached the upstream: never retried.
                _log.warning("upstream_failed", service=service, upstream=url, error=exc)
                status, payload = _json_error(502, "upstream_unavailable", f"{service} failed to answer.")
                await _send_simple(send, status, payload, rid)
                return status
            upstream.mark_up(url)
            return await self._relay(resp, send, rid, service)

        status, payload = _json_error(502, "upstream_unavailable", f"No {service} replica could be reached.")
        await _send_simple(send, status, payload, rid)
        return status

    async def _relay(self, resp: aiohttp.ClientResponse, send: Any, rid: str, service: str) -> int:
        try:
            # raw_headers keeps duplicates (Set-Cookie) as separate pairs.
            drop = _hop_by_hop(resp.raw_headers)
            out_headers = [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in drop]
            if not any(k == b"x-request-id" for k, _ in out_headers):
                out_headers.append((b"x-request-id", rid.encode()))
            length = resp.content_length
            if length is not None and length <= BUFFER_LIMIT:
                try:
                    data = await resp.read()
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    _log.warning("upstream_body_failed", service=service, error=exc)
                    status, payload = _json_error(502, "upstream_unavailable", f"{service} failed mid-answer.")
                    await _send_simple(send, status, payload, rid)
                    return status
                out_headers.append((b"content-length", str(len(data)).encode()))
                await send({"type": "http.response.start", "status": resp.status, "headers": out_headers})
                await send({"type": "http.response.body", "body": data})
                return resp.status
            if length is not None:
                out_headers.append((b"content-length", str(length).encode()))
            await send({"type": "http.response.start", "status": resp.status, "headers": out_headers})
            try:
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # Headers are gone already: all we can do is cut the response short.
                _log.warning("upstream_stream_failed", service=service, error=exc)
            await send({"type": "http.response.body", "body": b""})
            return resp.status
        finally:
            resp.release()


async def _unless_client_leaves(request: Any, receive: Any) -> aiohttp.ClientResponse | None:
    """Await the upstream answer in this task, or cancel the upstream request (None) when
    the client disconnects first. Only for requests whose body was read in full (a held
    poll). One watcher task per held poll, and no more: awaiting both in tasks of their own
    (asyncio.wait) cost 2 KiB per held poll."""
    task = asyncio.current_task()
    assert task is not None  # called from the request's task
    waiting = True

    def client_left(_: asyncio.Future) -> None:
        if waiting:  # a callback already scheduled when the answer came is a no-op
            task.cancel()

    gone = asyncio.ensure_future(departure(receive))
    gone.add_done_callback(client_left)
    try:
        return await request
    except asyncio.CancelledError:
        # Ours only when the client left and nobody else (a shutdown) cancelled us too.
        if gone.done() and not gone.cancelled() and task.uncancel() == 0:
            return None
        raise
    finally:
        waiting = False
        gone.remove_done_callback(client_left)  # before cancelling the watcher
        gone.cancel()


def _hop_by_hop(headers: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The fixed hop-by-hop names plus those a Connection header lists (RFC 9110 7.6.1)."""
    listed = {
        token.strip().lower().encode("latin-1")
        for k, v in headers if k.lower() == b"connection"
        for token in v.decode("latin-1").split(",") if token.strip()
    }
    return HOP_BY_HOP | listed


async def _send_simple(send: Any, status: int, body: bytes, rid: str,
                       content_type: bytes = b"application/json",
                       extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rid.encode()), *(extra or [])],
    })
    await send({"type": "http.response.body", "body": body})
