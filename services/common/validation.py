"""Request parsing: JSON bodies and query strings to checked Python values.

Everything PostgreSQL would refuse (NUL characters, lone surrogates) is refused here as
`400 invalid_request` naming the field, so bad input never reaches SQL and never yields a 500.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from starlette.requests import ClientDisconnect, Request

from services.common import service
from services.common.errors import ApiError, invalid, not_found
from services.common.where import WhereError, parse

_MISSING = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """1e999 parses as infinity, which JSON cannot carry and PostgreSQL refuses."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


async def read_body(request: Request, limit: int, too_large: str = "The request body is too large.") -> bytes:
    """The whole body, at most `limit` bytes: 413 before reading a byte when its declared
    length says more, and as soon as what arrives passes it otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiError(413, "payload_too_large", too_large)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, "payload_too_large", too_large)
    except ClientDisconnect:
        # The sender gave up mid-body (the gateway does so past its size limit).
        raise invalid("The request body was cut short.") from None
    return bytes(body)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The JSON object of the body. A service called directly enforces the same size limit
    as the gateway (FLEETLINE_MAX_BODY_BYTES)."""
    return parse_json_object(await read_body(request, service.of(request).settings.max_body_bytes))


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant,
                          parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise invalid("The body is not valid UTF-8 JSON.") from None
    if not isinstance(data, dict):
        raise invalid("The body must be a JSON object.")
    return data


def check_text(value: Any, name: str) -> None:
    """Refuse text PostgreSQL cannot store, anywhere inside a JSON value."""
    if isinstance(value, str):
        if "\x00" in value:
            raise invalid(f"{name} must not contain NUL characters.", name)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid(f"{name} must be valid Unicode text.", name) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k, name)
            check_text(v, name)
    elif isinstance(value, list):
        for v in value:
            check_text(v, name)


@dataclass(frozen=True)
class Str:
    min_len: int = 0
    max_len: int = 255
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    rule: str | None = None  # what the pattern means, for the error ("must not ...")

    def __call__(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise invalid(f"{name} must be a string.", name)
        if not self.min_len <= len(value) <= self.max_len:
            raise invalid(f"{name} must be {self.min_len} to {self.max_len} characters long.", name)
        check_text(value, name)
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise invalid(f"{name} {self.rule or f'must match {self.pattern}'}.", name)
        if self.choices and value not in self.choices:
            raise invalid(f"{name} must be one of: {', '.join(self.choices)}.", name)
        return value


@dataclass(frozen=True)
class Int:
    lo: int
    hi: int

    def __call__(self, value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(f"{name} must be an integer.", name)
        if not self.lo <= value <= self.hi:
            raise invalid(f"{name} must be between {self.lo} and {self.hi}.", name)
        return value


def Bool(value: Any, name: str) -> bool:  # noqa: N802 - a validator, named like the others
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false.", name)
    return value


def read_where(value: Any, name: str) -> list:
    """A `where` expression, parsed (services/common/where.py); 400 naming the field and
    the position of what is wrong."""
    text = Str(1, 4096)(value, name)
    try:
        return parse(text)
    except WhereError as exc:
        raise invalid(f"{name} is malformed: {exc}.", name) from None


def depth(value: Any) -> int:
    """How deeply a JSON value nests (a scalar 0, {} or [] 1)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@dataclass(frozen=True)
class JsonObject:
    max_bytes: int = 65536
    max_depth: int | None = None

    def __call__(self, value: Any, name: str) -> dict:
        if not isinstance(value, dict):
            raise invalid(f"{name} must be a JSON object.", name)
        if self.max_depth is not None and depth(value) > self.max_depth:
            raise invalid(f"{name} must nest at most {self.max_depth} deep.", name)
        check_text(value, name)
        if len(json.dumps(value, ensure_ascii=False).encode("utf-8")) > self.max_bytes:
            raise invalid(f"{name} must be at most {self.max_bytes} bytes of JSON.", name)
        return value


@dataclass(frozen=True)
class StrMap:
    """A flat object of short string values (agent labels)."""

    max_items: int = 64
    max_len: int = 255
    key: "Str | None" = None  # a further check of each key

    def __call__(self, value: Any, name: str) -> dict:
        if not isinstance(value, dict) or len(value) > self.max_items:
            raise invalid(f"{name} must be an object of at most {self.max_items} entries.", name)
        for k, v in value.items():
            if not isinstance(v, str) or not (0 < len(k) <= self.max_len) or len(v) > self.max_len:
                raise invalid(f"{name} must map short names to short strings.", name)
        check_text(value, name)
        if self.key is not None:
            for k in value:
                self.key(k, name)
        return value


# Text an operator's terminal or page shows as it is (host names, OS, label keys): no
# control characters (an escape sequence could clear a screen or forge a table row), and no
# bidirectional overrides (they reorder what is shown).
NO_CONTROLS = r"[^\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]*"


def printable(max_len: int, min_len: int = 0) -> Str:
    return Str(min_len, max_len, pattern=NO_CONTROLS, rule="must not contain control characters")


def parse_uuid(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{name} must be a UUID string.", name)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise invalid(f"{name} must be a UUID string.", name) from None


def parse_timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise invalid(f"{name} must be an RFC 3339 timestamp.", name)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{name} must be an RFC 3339 timestamp.", name) from None
    if parsed.tzinfo is None:
        raise invalid(f"{name} must carry a time zone (use Z for UTC).", name)
    utc = to_utc(parsed)
    if utc is None:
        raise invalid(f"{name} must fall within the years 1 to 9999 in UTC.", name)
    return utc


def to_utc(moment: datetime) -> datetime | None:
    """An aware instant in UTC, or None when UTC would leave the years 1 to 9999
    (0001-01-01T00:00:00+01:00 is in year 0 in UTC)."""
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        return None


def nullable(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def inner(value: Any, name: str) -> Any:
        return None if value is None else check(value, name)

    return inner


def take(
    data: dict[str, Any], name: str, check: Callable[[Any, str], Any], default: Any = _MISSING,
    *, within: str = "",
) -> Any:
    """One field of a body: required unless a default is given; null means the default.
    `within` names the object it sits in (`command.`), so errors name the field in full."""
    value = data.get(name, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise invalid(f"{within}{name} is required.", f"{within}{name}")
        return default
    return check(value, f"{within}{name}")


def query_int(request: Request, name: str, lo: int, hi: int, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
        raise invalid(f"{name} must be an integer between {lo} and {hi}.", name)
    return Int(lo, hi)(int(raw), name)


def path_uuid(request: Request, name: str) -> str | None:
    """A path id that is not a UUID cannot name anything: callers answer 404."""
    try:
        return str(uuid.UUID(request.path_params[name]))
    except ValueError:
        return None


def path_id(request: Request, name: str, what: str) -> uuid.UUID:
    """The UUID a path names, or 404 "No such <what>." (a path id that is not a UUID
    cannot name anything)."""
    found = path_uuid(request, name)
    if found is None:
        raise not_found(f"No such {what}.")
    return uuid.UUID(found)


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    """An optional query parameter that must be one of `choices` (empty means absent)."""
    value = request.query_params.get(name) or None
    if value is not None and value not in choices:
        raise invalid(f"{name} must be one of: {', '.join(choices)}.", name)
    return value


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
