"""ETHOS lines for the agent: `[LEVEL] [agent] [subsystem] event key=value ...`.
Values are written by the same function as the services' (fleetline.ethos, standard
library only); the agent never imports services."""

from __future__ import annotations

import sys
import threading

from fleetline.ethos import format_fields, traceback_field

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}


class Log:
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.level = LEVELS["INFO"]
        self._lock = threading.Lock()

    def configure(self, level: str) -> None:
        self.level = LEVELS.get(level.upper(), LEVELS["INFO"])

    def _emit(self, level: str, subsystem: str, event: str, fields: dict) -> None:
        if LEVELS[level] < self.level:
            return
        kv = format_fields(fields)
        with self._lock:  # command threads log too: one whole line at a time
            self.stream.write(f"[{level}] [agent] [{subsystem}] {event}{' ' + kv if kv else ''}\n")
            self.stream.flush()

    def info(self, subsystem: str, event: str, **fields) -> None:
        self._emit("INFO", subsystem, event, fields)

    def warning(self, subsystem: str, event: str, **fields) -> None:
        self._emit("WARNING", subsystem, event, fields)

    def error(self, subsystem: str, event: str, exc_info: BaseException | None = None, **fields) -> None:
        """`exc_info`: an exception nobody expected, logged with its traceback (one field)."""
        self._emit("ERROR", subsystem, event, {**fields, **(traceback_field(exc_info) if exc_info else {})})
