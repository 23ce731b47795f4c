"""The gateway's edge: TLS, slow clients and stalled connections. uvicorn's httptools
protocol, with what uvicorn lacks for a server that faces the network (it times out neither
request headers nor bodies, and caps nothing per client address):

- A connection must complete its request headers within `header_timeout_s` of connecting
  (TLS handshake included), or of the first byte of its next request on a kept-alive
  connection, and its body within `body_timeout_s` of its headers. Otherwise it is answered
  `408 request_timeout` (when an answer can still be sent) and closed.
- A connection waiting STALLED_AFTER_S without a complete request (handshaking, sending
  headers or a body, idle between requests) is *stalled*. Past `max_stalled_per_address`
  stalled connections from one address, the address's oldest stalled ones are closed, never
  a fresh one: a burst of thousands from one address (a site behind NAT reconnecting at
  once) completes its requests in milliseconds and is served in full, while stalled
  connections from one address never take capacity from anyone else. A request counts
  against the gateway's capacity (proxy.py) only once it is complete, body included.
  Proxies in front of the gateway (FLEETLINE_GATEWAY_TRUSTED_PROXIES) are not capped:
  every client arrives from their address.
- TLS is started by this protocol on the accepted connection (`loop.start_tls`), not by the
  listener, so the handshake runs under the header deadline and counts as waiting.

Everything here runs in the event loop's callbacks: no task per connection but the
handshake's; two timer handles per connection (its deadline, and when it would stall).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fleetline.ethos import Log
from fleetline.http import error_bytes, request_id_from
from fleetline.settings import Settings, SettingsError
from fleetline.transport import is_loopback_host

_log = Log("gateway", "edge")

# What a connection is doing; all but BUSY are waiting for a complete request.
HANDSHAKE, HEADERS, BODY, BUSY, IDLE = "handshake", "headers", "body", "busy", "idle"
# A connection waiting this long without a complete request is stalled (docs/api.md, slow clients).
STALLED_AFTER_S = 2.0


class Stallable(Protocol):
    def close_stalled(self) -> None: ...


@dataclass
class Stalls:
    """Per address, its stalled connections, oldest first; past `cap`, the oldest is closed.
    The gateway's metrics read the counts."""

    cap: int
    exempt: frozenset[str] = frozenset()
    by_address: dict[str, dict[Stallable, None]] = field(default_factory=dict)
    closed: int = 0
    timed_out: int = 0

    def stalled(self, address: str, conn: Stallable) -> None:
        if address in self.exempt:
            return
        held = self.by_address.setdefault(address, {})
        held[conn] = None  # insertion order: the oldest stalled first
        while len(held) > self.cap:
            oldest = next(iter(held))
            del held[oldest]
            self.closed += 1
            oldest.close_stalled()

    def resumed(self, address: str, conn: Stallable) -> None:
        """No longer stalled: its request completed, or it is gone."""
        held = self.by_address.get(address)
        if held is None or conn not in held:
            return
        del held[conn]
        if not held:
            del self.by_address[address]

    def count(self) -> int:
        return sum(len(held) for held in self.by_address.values())


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


class _Buffered(Protocol):
    """A buffered protocol as its transport sees it. uvloop's TLS layer is one without
    deriving from asyncio.BufferedProtocol, so this is a shape, never an isinstance check."""

    def get_buffer(self, sizehint: int) -> Any: ...

    def buffer_updated(self, nbytes: int) -> None: ...


def _feed(layer: _Buffered, data: bytes) -> None:
    """Hand bytes to a buffered protocol (the TLS layer) as its transport would."""
    view = memoryview(data)
    while view:
        buffer = memoryview(layer.get_buffer(len(view)))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        layer.buffer_updated(size)
        view = view[size:]


def edge_protocol(settings: Settings, tls: ssl.SSLContext | None, stalls: Stalls) -> type:
    """uvicorn's protocol class for the gateway (uvicorn.Config(http=...))."""
    header_s, body_s = settings.header_timeout_s, settings.body_timeout_s

    class EdgeProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._address = ""
            self._phase = HANDSHAKE
            self._deadline: asyncio.TimerHandle | None = None
            self._stall: asyncio.TimerHandle | None = None  # when waiting turns into stalled
            self._raw: asyncio.Transport | None = None  # the TCP transport, under TLS
            self._early: list[bytes] | None = None  # TLS data before uvicorn's connection_made
            self._handshaking: asyncio.Task | None = None

        # --- waiting for a complete request, and stalling -----------------------------

        def _waiting(self) -> None:
            """Waiting for a request from now on (unless already): stalled at STALLED_AFTER_S."""
            if self._stall is None:
                self._stall = self.loop.call_later(STALLED_AFTER_S, self._stalled)

        def _not_waiting(self) -> None:
            if self._stall is not None:
                self._stall.cancel()
                self._stall = None
            stalls.resumed(self._address, self)

        def _stalled(self) -> None:
            self._stall = None
            stalls.stalled(self._address, self)

        def close_stalled(self) -> None:
            """The address has too many stalled connections and this is its oldest."""
            _log.debug("stalled_connection_closed", client=self._address, phase=self._phase)
            self._cut()

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            stalls.timed_out += 1
            _log.debug("request_timeout", client=self._address, phase=self._phase)
            self._cut()

        def _cut(self) -> None:
            """Close the connection: `408` first when an answer can still be sent."""
            self._disarm()
            self._not_waiting()
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
            if self.transport.is_closing():
                return
            if self._phase in (HEADERS, BODY):
                self.transport.write(_timeout_response("body" if self._phase == BODY else "headers"))
            self.transport.close()

        # --- connection ---------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer = transport.get_extra_info("peername")
            self._address = str(peer[0]) if peer else ""
            self._arm(header_s)
            self._waiting()
            if tls is None:
                self._phase = HEADERS
                super().connection_made(transport)
                return
            self._raw = transport
            self._early = []
            self._handshaking = self.loop.create_task(self._handshake(transport))

        async def _handshake(self, raw: asyncio.Transport) -> None:
            assert tls is not None  # only a TLS gateway hands connections to a handshake
            starting = self.loop.create_task(self.loop.start_tls(
                raw, self, tls, server_side=True, ssl_handshake_timeout=header_s))
            # One turn of the loop: start_tls has paused reading and put its TLS layer in
            # place. Bytes that reached us first (uvloop starts reading right after
            # connection_made, whatever it asked) belong to that layer, before any others.
            await asyncio.sleep(0)
            handshake_bytes, self._early = b"".join(self._early or ()), []
            layer = raw.get_protocol()
            if handshake_bytes and layer is not self:
                self.loop.call_soon(_feed, cast(_Buffered, layer), handshake_bytes)
            secured = None
            try:
                secured = await starting
            except Exception as exc:  # a bad or abandoned handshake: drop the connection
                _log.debug("tls_handshake_failed", client=self._address, error=exc)
            # Lost, timed out or closed as stalled meanwhile: start_tls may still hand back
            # a closed transport.
            if secured is None or secured.is_closing() or self._deadline is None:
                self._disarm()
                self._not_waiting()
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
            self._not_waiting()
            if self.transport is None:  # lost in the handshake
                self.connections.discard(self)
                return
            super().connection_lost(exc)

        # --- the request's phases (httptools callbacks) -------------------------------------

        def on_message_begin(self) -> None:
            if self._phase in (BUSY, IDLE):  # the next request on this connection
                self._waiting()  # pipelined behind a busy one: waiting from now
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
            self._not_waiting()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._phase == BUSY and not self.transport.is_closing():
                # Idle until the next request (uvicorn's keep-alive timeout ends it).
                self._phase = IDLE
                self._waiting()

    return EdgeProtocol
