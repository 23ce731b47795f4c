"""Where an agent's output chunk goes in its command's stream: pure decisions, in bytes of
UTF-8, tested on their own (tests/unit/test_output_rules.py).

A chunk names the offset it starts at. The stream is append-only and capped:
- a chunk that starts past the end leaves a gap: refused, with the end to resume from;
- a chunk that overlaps what is stored must agree with it (a retry after a lost answer);
  what lies beyond the stored end is appended, what agrees changes nothing;
- past the cap the stream is cut (never inside a character) and marked truncated, and
  every later chunk is answered `truncated` and stored nowhere."""

from __future__ import annotations

from dataclasses import dataclass

from fleetline.utf8 import head

APPEND, SAME, CONFLICT = "append", "same", "conflict"
MAX_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Placement:
    kind: str  # APPEND (data at `at`), SAME (nothing to store) or CONFLICT
    at: int = 0
    data: bytes = b""
    truncated: bool = False


def place(stored: int, truncated: bool, offset: int, data: bytes, overlap: bytes, cap: int) -> Placement:
    """`stored`: the stream's length so far; `overlap`: the stored bytes from `offset` up
    to the stored end or the chunk's end, whichever comes first."""
    if truncated:
        return Placement(SAME, truncated=True)
    if offset > stored:
        return Placement(CONFLICT)
    agreed = stored - offset
    if overlap != data[:agreed]:
        return Placement(CONFLICT)
    new = data[agreed:]
    if not new:
        return Placement(SAME)
    kept = head(new, cap - stored)
    return Placement(APPEND, at=stored, data=kept, truncated=len(kept) < len(new))


def assemble(chunks: list[tuple[int, str]], start: int, end: int) -> bytes:
    """The stored bytes of [start, end) from the chunks (offset, text) that cover it."""
    out = bytearray()
    for offset, text in chunks:
        raw = text.encode("utf-8")
        lo, hi = max(start, offset), min(end, offset + len(raw))
        if lo < hi:
            out += raw[lo - offset:hi - offset]
    return bytes(out)


def readable_from(data: bytes) -> int:
    """How many leading bytes to skip so `data` starts on a character (a reader asked
    for an offset inside one)."""
    skip = 0
    while skip < len(data) and skip < 4 and (data[skip] & 0xC0) == 0x80:
        skip += 1
    return skip
