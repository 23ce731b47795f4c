"""HTTP pieces every Fleetline process shares (services and gateway): the JSON error
envelope, request ids, reading ASGI headers, and request metrics. No business logic."""

from __future__ import annotations

import json
import re
import uuid
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def error_body(code: str, detail: str, field: str | None = None) -> dict:
    """The one error envelope of the API: {"error", "detail", "field"?}."""
    body = {"error": code, "detail": detail}
    if field is not None:
        body["field"] = field
    return body


def error_bytes(code: str, detail: str, field: str | None = None) -> bytes:
    return json.dumps(error_body(code, detail, field)).encode()


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


async def departure(receive: Callable) -> None:
    """Ends when the HTTP client goes away. Only for a request whose body was already read
    or is empty (a held poll): every message but the disconnect is the empty body."""
    while (await receive())["type"] != "http.disconnect":
        pass


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

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> Gauge:
        """A gauge read when scraped."""
        gauge = Gauge(name, doc, registry=self.registry)
        gauge.set_function(read)
        return gauge

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
