"""SIGTERM/SIGINT end every sleep at once, in every thread.

The signal handler only sets a flag; the wake-up goes through `signal.set_wakeup_fd`
(written by the interpreter at C level), so no lock is ever taken inside a handler
(threading.Event.set there can deadlock against the interrupted main thread). The main
thread sleeps on that socket; when it sees the stop it sets an Event, on which the
command threads sleep. `wake()` lets a command thread end the main thread's wait for it.
"""

from __future__ import annotations

import select
import signal
import socket
import threading
import time

_WAKE = b"w"  # signals write their number (SIGTERM: 15); wake() writes this


class Stopper:
    def __init__(self) -> None:
        self.stopping = False
        self._stopped = threading.Event()
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def install(self) -> None:
        signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def stop(self) -> None:
        """Stop from a thread (never from a signal handler): every sleep ends."""
        self.stopping = True
        self._stopped.set()
        self.wake()

    def wake(self) -> None:
        """End the main thread's current wakeable sleep early; safe from any thread."""
        try:
            self._w.send(_WAKE)
        except OSError:
            pass  # the buffer is full: a wake-up is pending anyway

    def sleep(self, seconds: float, wakeable: bool = False) -> bool:
        """Sleep up to `seconds`; False as soon as a stop is requested. In the main thread a
        wakeable sleep also ends (True) at wake(): callers re-check what they wait for."""
        if threading.current_thread() is not threading.main_thread():
            return not self.stopping and not self._stopped.wait(max(0.0, seconds)) and not self.stopping
        deadline = time.monotonic() + max(0.0, seconds)
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            ready, _, _ = select.select([self._r], [], [], remaining)
            if ready:
                try:
                    data = self._r.recv(4096)  # drain; the flag says whether it was a stop
                except OSError:
                    data = b""
                if wakeable and _WAKE in data and not self.stopping:
                    return True
        self._stopped.set()  # the command threads' sleeps end too
        return False
