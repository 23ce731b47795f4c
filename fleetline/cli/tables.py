"""How the CLI prints what came over the network: key/value and tables, every value
escaped first (safe_text)."""

from __future__ import annotations

import json
from typing import Any


def safe_text(value: Any) -> str:
    """What a terminal may print of a value that came over the network (an agent's host
    name, a label, an output): control characters and bidirectional overrides escaped, so
    none can clear the screen, forge a row or set the window title."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def safe_lines(text: str) -> str:
    """safe_text for many lines (an output): newlines and tabs kept, every other control
    character escaped."""
    return "\n".join("\t".join(safe_text(part) for part in line.split("\t")) for line in text.split("\n"))


def table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{safe_text(k)}={safe_text(v)}" for k, v in value.items()) or "-"
    return safe_text(value)


def show(obj: dict) -> str:
    width = max(len(k) for k in obj)
    out = []
    for k, v in obj.items():
        text = json.dumps(v) if isinstance(v, (dict, list)) else cell(v)
        out.append(f"{k.ljust(width)}  {text}")
    return "\n".join(out)
