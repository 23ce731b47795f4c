"""The agent's live output stream, against a recording sender: chunks on whole characters
and at most 64 KiB, in order and complete, a failing send retried while the command runs
and never holding up its end, the server's `truncated` ending the stream."""

from __future__ import annotations

import threading
import time

from agent.client import Retryable
from agent.streaming import CHUNK_BYTES, OutputStream, StreamEnded
from agent.timing import Backoff


class QuickBackoff(Backoff):
    """The results' backoff starts at 10 s; these tests wait 50 ms."""

    def next_delay(self, retry_after_s=None, rate_limited=False) -> float:
        self.attempt += 1
        return 0.05


class Server:
    def __init__(self, fail_first: int = 0, truncate_after: int | None = None, always_fail: bool = False):
        self.chunks: list[tuple[int, str]] = []
        self.fail_first, self.truncate_after, self.always_fail = fail_first, truncate_after, always_fail
        self.calls = 0
        self.lock = threading.Lock()

    def send(self, offset: int, data: str) -> dict:
        with self.lock:
            self.calls += 1
            if self.always_fail or self.calls <= self.fail_first:
                raise Retryable("connection refused", retry_after=0.01)
            assert offset == sum(len(d.encode()) for _, d in self.chunks), "a gap or an overlap"
            self.chunks.append((offset, data))
            total = offset + len(data.encode())
            return {"next_offset": total, "truncated": self.truncate_after is not None and total >= self.truncate_after}

    def text(self) -> str:
        return "".join(d for _, d in self.chunks)


def _stream(server: Server, **kw) -> OutputStream:
    return OutputStream("c0ffee00-0000", server.send, retryable=(Retryable,), backoff=QuickBackoff(), **kw)


def test_a_large_burst_arrives_whole_in_chunks_of_whole_characters():
    server = Server()
    stream = _stream(server)
    body = ("é€x\x00" * 100_000).encode()  # NUL becomes U+FFFD, as in results
    for i in range(0, len(body), 4093):  # split anywhere, inside characters too
        stream.feed(body[i:i + 4093])
    stream.close()
    assert server.text() == body.decode().replace("\x00", "\ufffd")
    assert all(len(d.encode()) <= CHUNK_BYTES for _, d in server.chunks)
    assert len(server.chunks) > 10


def test_a_trickle_is_sent_about_every_interval_before_the_command_ends():
    server = Server()
    stream = _stream(server, interval_s=0.2)
    stream.feed(b"first line\n")
    deadline = time.monotonic() + 5
    while not server.chunks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.text() == "first line\n"  # sent while the command still runs
    stream.feed(b"second line\n")
    stream.close()
    assert server.text() == "first line\nsecond line\n"


def test_a_failing_send_is_retried_while_the_command_runs():
    server = Server(fail_first=3)
    stream = _stream(server, interval_s=0.05)
    stream.feed(b"hello")
    deadline = time.monotonic() + 10
    while not server.chunks and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.close()
    assert server.text() == "hello" and server.calls >= 4


def test_a_server_that_is_down_never_holds_up_the_end_of_the_command():
    server = Server(always_fail=True)
    stream = _stream(server, interval_s=0.05)
    stream.feed(b"x" * 1000)
    time.sleep(0.2)  # a few failures, and a backoff under way
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 2.0
    assert stream.ended and server.chunks == []


def test_truncated_or_refused_ends_the_stream():
    server = Server(truncate_after=10)
    stream = _stream(server, chunk_bytes=8)
    stream.feed(b"0123456789abcdef" * 4)
    stream.close()
    assert stream.ended and server.text() == "0123456789abcdef"[:16]

    def refuse(offset, data):
        raise StreamEnded("conflict: this command is cancelled")

    refused = OutputStream("c0ffee00-0001", refuse, retryable=(Retryable,))
    refused.feed(b"anything")
    refused.close()
    assert refused.ended
