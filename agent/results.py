"""Results the server always accepts: output that is UTF-8 text without NUL characters and
at most 64 KiB, keeping its end (where errors usually are), with any note of ours inside
that budget. A pure function, property-tested: any bytes in, a valid output out."""

from __future__ import annotations

MAX_OUTPUT_BYTES = 64 * 1024
CUT_MARK = "[output cut: its beginning is not shown]\n"


def clean_text(data: bytes | str) -> str:
    """Invalid UTF-8, lone surrogates and NUL become U+FFFD."""
    if isinstance(data, bytes):
        text = data.decode("utf-8", errors="replace")
    else:
        text = data.encode("utf-8", errors="replace").decode("utf-8")
    return text.replace("\x00", "\ufffd")


def _tail(text: str, budget: int) -> str:
    """The longest end of `text` that fits `budget` bytes of UTF-8 (never half a character)."""
    encoded = text.encode("utf-8")
    if len(encoded) <= budget:
        return text
    return encoded[len(encoded) - budget:].decode("utf-8", errors="ignore") if budget > 0 else ""


def fit_output(data: bytes | str, note: str = "", limit: int = MAX_OUTPUT_BYTES) -> str:
    """`data` (then `note`, on its own line) as output the server accepts."""
    text, note = clean_text(data), clean_text(note)
    note = _tail(note, limit // 4)  # a note never crowds out the output entirely
    suffix = ("\n" if text and note else "") + note
    budget = limit - len(suffix.encode("utf-8"))
    mark = len(CUT_MARK.encode("utf-8"))
    if len(text.encode("utf-8")) > budget:
        # Say that it was cut, when the budget has room to say so.
        text = CUT_MARK + _tail(text, budget - mark) if budget > mark else _tail(text, budget)
    return text + suffix
