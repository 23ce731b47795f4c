"""What every service's app shares: the request-id and metrics middleware (also the one
place a 500 is made), health routes, API routes without HEAD, and the client address."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetline.ethos import Log
from fleetline.http import Metrics, header_value, request_id_from
from services.common.errors import error_response

# Failures that mean "no database right now", not "a bug": connections refused or lost,
# a server starting up or shutting down.
DATABASE_DOWN = (OSError, asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError,
                 asyncpg.AdminShutdownError, asyncpg.InterfaceError, asyncio.TimeoutError)


class ServiceMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): request id in and out, metrics, and
    the service's only 500: any exception nobody handled becomes one `500 internal`
    (never a traceback in the answer), logged once with its traceback."""

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
        except DATABASE_DOWN as exc:
            # The database is restarting or unreachable: say so, so clients retry (every
            # agent call and queueing with an idempotency key is safe to repeat).
            self.log.warning("database_unavailable", path=scope["path"], request_id=rid, error=exc)
            if not started:
                resp = error_response(503, "not_ready", "The database is not reachable right now; retry shortly.",
                                      headers={"Retry-After": "1"})
                await resp(scope, receive, send_wrapper)
        except Exception as exc:
            self.log.error(
                "unhandled_exception",
                method=scope["method"],
                path=scope["path"],
                request_id=rid,
                exception=type(exc).__name__,
                error=exc,
                exc_info=exc,
            )
            if not started:
                resp = error_response(500, "internal", "An internal error occurred; it has been logged.")
                await resp(scope, receive, send_wrapper)
        finally:
            name = getattr(scope.get("endpoint"), "__name__", "unmatched")
            self.metrics.observe(name, status, time.perf_counter() - t0)


def api_route(path: str, **endpoints: Callable) -> Route:
    """One route per path with an endpoint per method: `api_route("/x", GET=a, POST=b)`.
    Any other method is 405 with an Allow header naming all of them (separate routes per
    method would each name only their own). Starlette adds HEAD to GET routes; the API
    lists no HEAD (a HEAD on the poll would claim commands and throw them away), so it is
    taken out and answered 405 like any other method not listed."""

    async def by_method(request: Request) -> Response:
        endpoint = endpoints[request.method]
        request.scope["endpoint"] = endpoint  # metrics name the real endpoint
        return await endpoint(request)

    route = Route(path, by_method, methods=list(endpoints))
    route.methods = set(endpoints)
    return route


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
