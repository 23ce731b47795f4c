"""Every SQL statement of every `queries` module of the services, found by walking the tree:
a room that adds its own queries.py is read without anyone listing it."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
STATEMENT = re.compile(r"\s*(WITH|SELECT|INSERT|UPDATE|DELETE|SET)\b", re.IGNORECASE)


def queries_modules() -> list[ModuleType]:
    paths = sorted((ROOT / "services").rglob("queries.py"))
    return [importlib.import_module(".".join(p.relative_to(ROOT).with_suffix("").parts)) for p in paths]


def statements() -> list[tuple[str, str, str]]:
    """(module, name, sql) for every statement: upper-case names holding SQL, and the SQL in
    upper-case dicts of statements chosen by filters. Names starting `_` are fragments."""
    found = []
    for module in queries_modules():
        for name, value in vars(module).items():
            if name.startswith("_") or not name.isupper():
                continue
            if isinstance(value, str) and STATEMENT.match(value):
                found.append((module.__name__, name, value))
            elif isinstance(value, dict):
                found += [(module.__name__, f"{name}[{key}]", v) for key, v in value.items()
                          if isinstance(v, str) and STATEMENT.match(v)]
    return found
