"""The gateway's edge: TLS, slow clients and stalled connections. uvicorn's httptools
protocol, with what uvicorn lacks for a server that faces the network (it times out neither
request headers nor bodies, and caps nothing per client address):

- A connection must complete its request headers within `header_timeout_s` of connecting
  (TLS handshake included), or of the first byte of its next request on a kept-alive
  connection, and its body within `body_timeout_s` of its headers. Otherwise it is answered
  `408 request_timeout` (when an answer can still be sent) and closed.
- Connections that are not carrying a complete request (handshaking, sending headers or a
  body, idle between requests) are counted per client address. Past
  `max_pending_per_address`, a new connection from that address is closed at once, so
  stalled connections from one address never take capacity from anyone else. A request
  counts against the gateway's capacity (proxy.py) only once it is complete. Proxies in
  front of the gateway (FLEETLINE_GATEWAY_TRUSTED_PROXIES) are not capped: every client
  arrives from their address.
- TLS is started by this protocol on the accepted connection (`loop.start_tls`), not by the
  listener, so the handshake runs under the header deadline and the address's count.

Everything here runs in the event loop's callbacks: no task per connection but the
handshake's.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fleetline.ethos import Log
from fleetline.http import error_bytes, request_id_from
from fleetline.settings import Settings, SettingsError
from fleetline.transport import is_loopback_host

_log = Log("gateway", "edge")

# What a connection is doing; all but BUSY count against its address.
HANDSHAKE, HEADERS, BODY, BUSY, IDLE = "handshake", "headers", "body", "busy", "idle"


@dataclass
class EdgeCounts:
    """Per-address counts of connections without a complete request, and what the edge
    refused; the gateway's metrics read them."""

    cap: int
    exempt: frozenset[str] = frozenset()
    by_address: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    timed_out: int = 0

    def acquire(self, address: str) -> bool:
        if address in self.exempt:
            return True
        held = self.by_address.get(address, 0)
        if held >= self.cap:
            self.refused += 1
            return False
        self.by_address[address] = held + 1
        return True

    def release(self, address: str) -> None:
        if address in self.exempt:
            return
        held = self.by_address.get(address, 0) - 1
        if held > 0:
            self.by_address[address] = held
        else:
            self.by_address.pop(address, None)

    def pending(self) -> int:
        return sum(self.by_address.values())


def server_tls(settings: Settings) -> ssl.SSLContext | None:
    """The gateway's TLS context, or None for plain HTTP."""
    if not (settings.tls_cert_file or settings.tls_key_file):
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise SettingsError("FLEETLINE_TLS_CERT_FILE and FLEETLINE_TLS_KEY_FILE go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"the TLS certificate or key cannot be loaded: {exc}") from None
    return context


def check_listener(settings: Settings, host: str, tls: ssl.SSLContext | None) -> None:
    """Plain HTTP only on a loopback address, unless a TLS proxy is said to stand in front."""
    if tls is None and not is_loopback_host(host) and not settings.allow_plaintext:
        raise SettingsError(
            f"refusing to serve plain HTTP on {host}: set FLEETLINE_TLS_CERT_FILE and "
            "FLEETLINE_TLS_KEY_FILE, or FLEETLINE_ALLOW_PLAINTEXT=1 when a TLS proxy stands in front")


def _timeout_response(what: str) -> bytes:
    body = error_bytes("request_timeout", f"The request {what} did not arrive in time.")
    return b"".join([
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n",
        b"content-length: %d\r\nx-request-id: %s\r\nconnection: close\r\n\r\n"
        % (len(body), request_id_from(None).encode()), body])


def _feed(layer: asyncio.BufferedProtocol, data: bytes) -> None:
    """Hand bytes to a buffered protocol (the TLS layer) as its transport would."""
    view = memoryview(data)
    while view:
        buffer = layer.get_buffer(len(view))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        layer.buffer_updated(size)
        view = view[size:]


def edge_protocol(settings: Settings, tls: ssl.SSLContext | None, counts: EdgeCounts) -> type:
    """uvicorn's protocol class for the gateway (uvicorn.Config(http=...))."""
    header_s, body_s = settings.header_timeout_s, settings.body_timeout_s

    class EdgeProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._address = ""
            self._counted = False
            self._phase = HANDSHAKE
            self._deadline: asyncio.TimerHandle | None = None
            self._raw: asyncio.Transport | None = None  # the TCP transport, under TLS
            self._early: list[bytes] | None = None  # TLS data before uvicorn's connection_made
            self._handshaking: asyncio.Task | None = None

        # --- accounting ---------------------------------------------------------------

        def _count(self) -> bool:
            if not self._counted:
                self._counted = counts.acquire(self._address)
            return self._counted

        def _uncount(self) -> None:
            if self._counted:
                counts.release(self._address)
                self._counted = False

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            counts.timed_out += 1
            _log.debug("request_timeout", client=self._address, phase=self._phase)
            if self.transport is None:  # still in the TLS handshake: no answer possible
                if self._raw is not None:
                    self._raw.abort()
                return
            cycle = self.cycle
            if self._phase == BODY and cycle is not None:
                if cycle.response_started:
                    self.transport.close()
                    return
                # The app is waiting for the body: it hears the client left, sends nothing.
                cycle.disconnected = True
                cycle.message_event.set()
            if not self.transport.is_closing():
                self.transport.write(_timeout_response("body" if self._phase == BODY else "headers"))
                self.transport.close()

        # --- connection ---------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer = transport.get_extra_info("peername")
            self._address = str(peer[0]) if peer else ""
            if not self._count():
                transport.abort()
                return
            self._arm(header_s)
            if tls is None:
                self._phase = HEADERS
                super().connection_made(transport)
                return
            self._raw = transport
            self._early = []
            self._handshaking = self.loop.create_task(self._handshake(transport))

        async def _handshake(self, raw: asyncio.Transport) -> None:
            starting = self.loop.create_task(self.loop.start_tls(
                raw, self, tls, server_side=True, ssl_handshake_timeout=header_s))
            # One turn of the loop: start_tls has paused reading and put its TLS layer in
            # place. Bytes that reached us first (uvloop starts reading right after
            # connection_made, whatever it asked) belong to that layer, before any others.
            await asyncio.sleep(0)
            handshake_bytes, self._early = b"".join(self._early or ()), []
            layer = raw.get_protocol()
            if handshake_bytes and layer is not self:
                self.loop.call_soon(_feed, layer, handshake_bytes)
            secured = None
            try:
                secured = await starting
            except Exception as exc:  # a bad or abandoned handshake: drop the connection
                _log.debug("tls_handshake_failed", client=self._address, error=exc)
            # Lost or timed out meanwhile: start_tls may still hand back a closed transport.
            if secured is None or secured.is_closing() or self._deadline is None:
                self._disarm()
                self._uncount()
                (secured or raw).abort()
                return
            self._phase = HEADERS
            super().connection_made(secured)
            early, self._early = self._early, None
            for data in early or ():
                if self.transport.is_closing():
                    break
                super().data_received(data)

        def data_received(self, data: bytes) -> None:
            if self._early is not None:  # TLS delivered request bytes before we resumed
                self._early.append(data)
                return
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._uncount()
            if self.transport is None:  # refused at once, or lost in the handshake
                self.connections.discard(self)
                return
            super().connection_lost(exc)

        # --- the request's phases (httptools callbacks) -------------------------------------

        def on_message_begin(self) -> None:
            if self._phase in (BUSY, IDLE):  # the next request on this connection
                if not self._count():
                    self.transport.close()
                self._phase = HEADERS
                self._arm(header_s)
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._phase = BODY
            self._arm(body_s)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._phase = BUSY
            self._disarm()
            self._uncount()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._phase == BUSY and not self.transport.is_closing():
                # Idle until the next request (uvicorn's keep-alive timeout ends it).
                self._phase = IDLE
                if not self._count():
                    self.transport.close()

    return EdgeProtocol
