"""ETHOS lines for the agent: `[LEVEL] [agent] [subsystem] event key=value ...`.
(The agent never imports services, so it carries this small writer of its own.)"""

from __future__ import annotations

import sys

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}


def _value(v: object) -> str:
    text = str(v)
    if text == "" or any(c in text for c in ' ="\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class Log:
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.level = LEVELS["INFO"]

    def configure(self, level: str) -> None:
        self.level = LEVELS.get(level.upper(), LEVELS["INFO"])

    def _emit(self, level: str, subsystem: str, event: str, fields: dict) -> None:
        if LEVELS[level] < self.level:
            return
        kv = " ".join(f"{k}={_value(v)}" for k, v in fields.items())
        self.stream.write(f"[{level}] [agent] [{subsystem}] {event}{' ' + kv if kv else ''}\n")
        self.stream.flush()

    def info(self, subsystem: str, event: str, **fields) -> None:
        self._emit("INFO", subsystem, event, fields)

    def warning(self, subsystem: str, event: str, **fields) -> None:
        self._emit("WARNING", subsystem, event, fields)

    def error(self, subsystem: str, event: str, **fields) -> None:
        self._emit("ERROR", subsystem, event, fields)
