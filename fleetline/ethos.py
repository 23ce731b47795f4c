"""ETHOS log lines: `[LEVEL] [component] [subsystem] event_name key=value ...`.

One line per event. Values with spaces or quotes are quoted so a line stays parseable.
An unexpected exception is logged once, where it is handled, with its traceback as one
more field (`traceback="Traceback (most recent call last):\n  File ..."`, newlines
escaped): the event stays one line, and the traceback reads back whole.
Callers never pass secrets; nothing here could tell one from an ordinary value.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

_ROOT = "fleetline"


_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def format_value(value: Any) -> str:
    """A value as it appears after `key=`: bare when it is one plain word, else quoted with
    backslash escapes, so one event is always one line and splits back into its fields."""
    text = str(value)
    if text == "" or any(c in text for c in ' ="\\') or not text.isprintable():
        return '"' + text.translate(_ESCAPES) + '"'
    return text


def format_fields(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in fields.items())


def traceback_field(exc: BaseException) -> dict[str, str]:
    """The `traceback` field of an event about an unexpected exception."""
    return {"traceback": "".join(traceback.format_exception(exc)).rstrip("\n")}


class EthosFormatter(logging.Formatter):
    """Formats our own events as they are, and anything a library logs as an event too."""

    def format(self, record: logging.LogRecord) -> str:
        component = getattr(record, "component", None)
        if component is None:  # a library's record (uvicorn, asyncio, ...)
            name = record.name.split(".")
            component, subsystem = "lib", name[0]
            event = "library_message"
            line = f"{event} {format_fields({'message': record.getMessage()})}"
        else:
            subsystem = getattr(record, "subsystem", "")
            line = record.getMessage()
        text = f"[{record.levelname}] [{component}] [{subsystem}] {line}"
        if record.exc_info and record.exc_info[1] is not None and component == "lib":
            # A library's exception: its traceback as one escaped field (one line still).
            text += " " + format_fields(traceback_field(record.exc_info[1]))
        return text


class Log:
    """An event logger for one component and subsystem."""

    def __init__(self, component: str, subsystem: str):
        self._logger = logging.getLogger(f"{_ROOT}.{component}.{subsystem}")
        self._extra = {"component": component, "subsystem": subsystem}

    def _emit(self, level: int, event: str, fields: dict[str, Any],
              exc_info: BaseException | None = None) -> None:
        if self._logger.isEnabledFor(level):
            if exc_info is not None:
                fields = {**fields, **traceback_field(exc_info)}
            msg = event if not fields else f"{event} {format_fields(fields)}"
            self._logger.log(level, msg, extra=self._extra)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, exc_info: BaseException | None = None, **fields: Any) -> None:
        """`exc_info`: an exception nobody expected, logged with its traceback."""
        self._emit(logging.ERROR, event, fields, exc_info)


def configure(level: str = "INFO", stream=None) -> None:
    """Route every logger (ours and the libraries') through the ETHOS formatter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(EthosFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True
    # Access lines cost ~40% of throughput; the metrics count requests instead.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for chatty in ("databases", "yoyo", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
