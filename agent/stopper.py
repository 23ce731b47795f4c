"""SIGTERM/SIGINT end every sleep at once.

The signal handler only sets a flag; the wake-up goes through `signal.set_wakeup_fd`
(written by the interpreter at C level), so no lock is ever taken inside a handler
(threading.Event.set there can deadlock against the interrupted main thread).
"""

from __future__ import annotations

import select
import signal
import socket
import time


class Stopper:
    def __init__(self) -> None:
        self.stopping = False
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def install(self) -> None:
        signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; False as soon as a stop is requested."""
        deadline = time.monotonic() + max(0.0, seconds)
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            ready, _, _ = select.select([self._r], [], [], remaining)
            if ready:
                try:
                    self._r.recv(4096)  # drain; the flag says whether it was a stop
                except OSError:
                    pass
        return False
