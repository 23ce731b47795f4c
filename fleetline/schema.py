"""Which schema this code expects: the migrations shipped with it, in a checkout or an
installed wheel. Standard library only, so services can ask without importing yoyo.

`migrations/` is a namespace package (no __init__.py: yoyo would take a .py file for a
migration) whose SQL files the wheel carries as package data."""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _candidates() -> Iterator[Path]:
    spec = importlib.util.find_spec("migrations")
    yield from (Path(p) for p in ((spec.submodule_search_locations or []) if spec else []))
    # An editable install does not expose namespace packages: the checkout's own folder.
    yield Path(__file__).resolve().parent.parent / "migrations"


@contextmanager
def migrations_dir() -> Iterator[Path]:
    for location in _candidates():
        if any(location.glob("0001.*.sql")):  # ours, should a namespace be shared
            yield location
            return
    raise RuntimeError("the migrations this Fleetline needs are not installed")


def expected_versions() -> list[str]:
    """The migration ids that must be applied (yoyo's ids are the file stems)."""
    with migrations_dir() as path:
        return sorted(p.stem for p in path.glob("*.sql") if not p.name.endswith(".rollback.sql"))
