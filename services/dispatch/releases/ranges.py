"""The one `Range` a release download honours (RFC 9110, section 14): a single byte range
(`bytes=a-b`, `bytes=a-`, `bytes=-n`). Anything else a server may ignore is ignored (the
whole release is sent); a range wholly past the end is unsatisfiable (416). Pure."""

from __future__ import annotations

import re

_ONE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")


class Unsatisfiable(Exception):
    pass


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive, or None for the whole release; raises Unsatisfiable."""
    if header is None:
        return None
    match = _ONE.fullmatch(header.strip())
    if match is None:  # several ranges, another unit, or malformed: ignored
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable()
        return max(0, size - n), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored, as the RFC allows
    if start >= size:
        raise Unsatisfiable()
    return start, min(int(last) if last else size - 1, size - 1)
