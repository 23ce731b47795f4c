"""ETHOS log lines: one line per event, values that split back into their fields, and the
agent writing values exactly as the services do."""

import io
import logging

from hypothesis import given
from hypothesis import strategies as st

from agent.log import Log as AgentLog
from fleetline import ethos


def _split(line: str) -> list[str]:
    """ETHOS fields read back by their own grammar: spaces separate them; a double quote
    opens and closes a quoted run, inside which a backslash takes the next character as
    it is. Nothing else is special (shlex's quotes and comments are not ETHOS)."""
    fields, current, quoted, escaped = [], "", False, False
    for ch in line:
        if escaped:
            current, escaped = current + ch, False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == " " and not quoted:
            fields.append(current)
            current = ""
        else:
            current += ch
    return fields + [current]


@given(st.text())
def test_any_value_stays_on_one_line_and_reads_back(value):
    line = ethos.format_fields({"k": value, "after": "x"})
    assert "\n" not in line and "\r" not in line
    fields = dict(part.split("=", 1) for part in _split(line)) if "\\" not in value else None
    if fields is not None and value.isprintable():
        assert fields["k"] == value and fields["after"] == "x"


def test_plain_words_stay_bare_and_the_rest_is_quoted():
    assert ethos.format_fields({"a": "word", "b": 3}) == "a=word b=3"
    assert ethos.format_fields({"a": "two words"}) == 'a="two words"'
    assert ethos.format_fields({"a": "tab\there"}) == 'a="tab\\there"'
    assert ethos.format_fields({"a": ""}) == 'a=""'


def test_the_agent_writes_values_as_the_services_do():
    out = io.StringIO()
    log = AgentLog(out)
    fields = {"reason": "HTTP 503\tretry", "n": 3}
    log.warning("polling", "server_unavailable", **fields)
    assert out.getvalue() == f"[WARNING] [agent] [polling] server_unavailable {ethos.format_fields(fields)}\n"


def test_service_events_and_library_records_share_the_format():
    out = io.StringIO()
    ethos.configure("INFO", out)
    try:
        ethos.Log("dispatch", "claim").info("claimed", agent_id="a1", count=2)
        logging.getLogger("uvicorn.error").warning("Something odd")
    finally:
        ethos.configure("INFO")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[INFO] [dispatch] [claim] claimed agent_id=a1 count=2"
    assert lines[1] == '[WARNING] [lib] [uvicorn] library_message message="Something odd"'


def _boom() -> Exception:
    try:
        raise ValueError("bad\nthing")
    except ValueError as exc:
        return exc


def test_an_unexpected_exception_is_one_line_with_its_traceback_as_a_field():
    out = io.StringIO()
    ethos.configure("INFO", out)
    try:
        exc = _boom()
        ethos.Log("dispatch", "reaper").error("step_failed", error=exc, exc_info=exc)
    finally:
        ethos.configure("INFO")
    (line,) = out.getvalue().splitlines()  # one line, newlines escaped inside the field
    assert line.startswith('[ERROR] [dispatch] [reaper] step_failed error="bad\\nthing" traceback="Traceback '
                           '(most recent call last):\\n  File ')
    assert ", in _boom\\n" in line and line.endswith('ValueError: bad\\nthing"')


def test_the_agent_logs_a_traceback_the_same_way():
    out = io.StringIO()
    exc = _boom()
    AgentLog(out).error("lifecycle", "agent_crashed", error=exc, exc_info=exc)
    assert out.getvalue().count("\n") == 1 and 'traceback="Traceback (most recent call last):\\n' in out.getvalue()
