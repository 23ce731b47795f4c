"""What every service's app shares: request ids, metrics, the catch-all 500, health routes."""

from __future__ import annotations

import re
import time
import uuid
from typing import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import error_response
from services.common.ethos import Log

_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_log = Log("common", "http")


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of an ASGI header (names arrive lower-cased)."""
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


def request_id_from(value: str | None) -> str:
    """Keep a caller's well-formed request id; otherwise make one."""
    if value and _REQUEST_ID_OK.fullmatch(value):
        return value
    return uuid.uuid4().hex


class Metrics:
    def __init__(self, service: str):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fleetline_http_requests_total",
            "HTTP requests served",
            ["service", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fleetline_http_request_seconds",
            "HTTP request latency",
            ["service", "endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
        )
        self.service = service
        self._children: dict[tuple[str, int], tuple] = {}

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, list(labels), registry=self.registry)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Label children are looked up once per (endpoint, status), not per request."""
        pair = self._children.get((endpoint, status))
        if pair is None:
            pair = self._children[(endpoint, status)] = (
                self.requests.labels(self.service, endpoint, str(status)),
                self.latency.labels(self.service, endpoint),
            )
        pair[0].inc()
        pair[1].observe(seconds)


class ServiceMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): request id in and out, metrics, and
    any exception nobody handled becomes one logged `500 internal` without a traceback."""

    def __init__(self, app: ASGIApp, metrics: Metrics, component: str):
        self.app, self.metrics = app, metrics
        self.log = Log(component, "http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header_value(scope["headers"], b"x-request-id")
        rid = request_id_from(incoming)
        rid_header = (b"x-request-id", rid.encode())
        if rid != incoming:  # downstream code (and its logs) sees the id we answer with
            scope["headers"] = [h for h in scope["headers"] if h[0] != b"x-request-id"]
            scope["headers"].append(rid_header)
        status = 500
        started = False
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            self.log.error(
                "unhandled_exception",
                method=scope["method"],
                path=scope["path"],
                request_id=rid,
                exception=type(exc).__name__,
                error=exc,
            )
            if not started:
                resp = error_response(500, "internal", "An internal error occurred; it has been logged.")
                await resp(scope, receive, send_wrapper)
        finally:
            name = getattr(scope.get("endpoint"), "__name__", "unmatched")
            self.metrics.observe(name, status, time.perf_counter() - t0)


def health_routes(ready_check: Callable[[], Awaitable[bool]], metrics: Metrics) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if await ready_check():
            return JSONResponse({"status": "ready"})
        return error_response(503, "not_ready", "A dependency is not answering yet.")

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]


def client_address(request: Request, trusted_proxies: tuple[str, ...]) -> str:
    """The caller's address; `X-Forwarded-For` is believed only from a trusted proxy,
    and then its right-most untrusted hop is the client."""
    peer = request.client.host if request.client else "unknown"
    if peer not in trusted_proxies:
        return peer
    forwarded = request.headers.get("x-forwarded-for")
    if not forwarded:
        return peer
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            return hop[:64]
    return peer
