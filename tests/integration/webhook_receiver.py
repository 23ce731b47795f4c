"""A real webhook receiver for tests: an HTTP server on loopback that records every request
(path, headers, body) and answers as scripted (a status per request in turn, then 200;
"hang" holds the request unanswered; "redirect" answers 302 elsewhere)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> dict:
        return json.loads(self.body)

    def verified(self, secret: str) -> dict:
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    script: list = field(default_factory=list)
    got: list = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver's server

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.got.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                answer = receiver.script.pop(0) if receiver.script else 200
                if answer == "hang":
                    receiver.released.wait(60)
                    return
                if answer == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # http.server's 5 resets a sender's parallel connections

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in list(self.got) if r.json()["type"] == event_type]

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
