"""A running command's output, sent to the server as it comes: every second, or at once
when 64 KiB are waiting, whichever is first, from a thread of its own so the command never
waits for the network.

The stream is the command's output made acceptable (UTF-8, NUL-free; agent.results), so
offsets are bytes of that text and every chunk ends on a whole character. A failed send is
retried with backoff while the command runs; when it ends, what is still waiting is sent
once, at once, and a failure then ends the stream: the result (which keeps the output's
last 64 KiB) is never delayed by a chunk. The server saying `truncated` (its cap), or
refusing the chunk, ends the stream too."""

from __future__ import annotations

import codecs
import threading
import time
from typing import Callable

from agent.log import Log
from agent.timing import Backoff
from fleetline.utf8 import head

CHUNK_BYTES = 64 * 1024
INTERVAL_S = 1.0
BACKLOG_BYTES = 8 * 1024 * 1024  # past this much unsent (a server too slow), stop streaming


class StreamEnded(Exception):
    """The server will take no more of this stream (truncated, refused)."""


class OutputStream:
    def __init__(self, command_id: str, send: Callable[[int, str], dict],
                 interval_s: float = INTERVAL_S, chunk_bytes: int = CHUNK_BYTES,
                 backlog_bytes: int = BACKLOG_BYTES, retryable: tuple = (), log: Log | None = None,
                 backoff: Backoff | None = None):
        self.command_id, self.send, self.log = command_id, send, log or Log()
        self.interval_s, self.chunk_bytes, self.backlog_bytes = interval_s, chunk_bytes, backlog_bytes
        self.retryable = retryable
        self.backoff = backoff or Backoff()  # the results' policy (agent/timing.py)
        self.offset = 0  # where the next chunk starts (the server has everything before it)
        self.ended = False  # no more sending: the server's cap, a refusal, or a final failure
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = bytearray()
        self._first_pending_at = 0.0  # when the oldest unsent byte came (while any wait)
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"output-{command_id[:8]}", daemon=True)
        self._thread.start()

    def feed(self, data: bytes) -> None:
        """What the command printed, as it comes (any bytes)."""
        self._add(self._decoder.decode(data))

    def close(self, timeout: float = 30.0) -> None:
        """The command ended: send what is waiting (once), then stop."""
        self._add(self._decoder.decode(b"", final=True))
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def _add(self, text: str) -> None:
        if not text or self.ended:
            return
        raw = text.replace("\x00", "\ufffd").encode("utf-8", errors="replace")
        with self._cond:
            if len(self._pending) + len(raw) > self.backlog_bytes:
                self._end("backlog_full")
                return
            first = not self._pending
            if first:
                self._first_pending_at = time.monotonic()
            self._pending += raw
            if first or len(self._pending) >= self.chunk_bytes:
                self._cond.notify()  # the sender starts its interval, or sends at once

    def _due(self) -> float | None:
        """Seconds until a chunk is due (0: now), or None when nothing waits."""
        if not self._pending:
            return None
        if self._closing or len(self._pending) >= self.chunk_bytes:
            return 0.0
        return max(0.0, self._first_pending_at + self.interval_s - time.monotonic())

    def _run(self) -> None:
        backoff = self.backoff
        while True:
            with self._cond:
                while not self.ended:
                    due = self._due()
                    if due == 0.0 or (due is None and self._closing):
                        break
                    self._cond.wait(due)
                if self.ended or not self._pending:
                    return
                chunk = head(bytes(self._pending), self.chunk_bytes)
                closing = self._closing
            try:
                answer = self.send(self.offset, chunk.decode("utf-8"))
            except self.retryable as exc:
                if closing:
                    self._end("unsent_at_end", reason=exc)
                    return
                delay = backoff.next_delay(getattr(exc, "retry_after", None),
                                           getattr(exc, "rate_limited", False))
                with self._cond:  # the command ending cuts the wait short
                    self._cond.wait_for(lambda: self._closing, timeout=delay)
                continue
            except StreamEnded as exc:
                self._end("refused", reason=exc)
                return
            except Exception as exc:  # a bug must not kill the thread silently; the result still goes
                self._end("send_failed", reason=exc)
                return
            backoff.reset()
            with self._cond:
                del self._pending[:len(chunk)]
                self._first_pending_at = time.monotonic() if self._pending else 0.0
                self.offset += len(chunk)
                if answer.get("truncated"):
                    self._end("truncated_by_server")
                    return

    def _end(self, why: str, **fields) -> None:
        with self._cond:  # an RLock: callers may hold it already
            if self.ended:
                return
            self.ended = True
            self._pending.clear()
        self.log.info("commands", "output_stream_ended", command_id=self.command_id, why=why, sent=self.offset,
                     **fields)
