"""The README's "Where things are" map stays true: every path it names exists (a name
without a slash is read inside the folder named before it in the same row), and every room
of dispatch is on it. And the repository stands on its own: nothing points to the design
notes it was built from (API.md, DESIGN.md, STYLE.md, or the folder beside the repository
that holds them), only to docs/."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = {".git", ".venv", ".venv-pythons", "build", "node_modules", "__pycache__", ".fleetline",
           "screenshots", "results"}
TEXT = {".py", ".md", ".sql", ".toml", ".yaml", ".yml", ".html", ".js", ".css", ".cfg", ".service",
        ".mjs", ".json", ""}


def the_map() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| what")]


def named_paths(row: str) -> list[str]:
    """The paths a row names, each from the repository's root."""
    found, folder = [], ""
    for token in re.findall(r"`([^`]+)`", row.split(" | ", 1)[1]):
        if "/" in token and " " not in token:
            found.append(token)
            folder = token if token.endswith("/") else folder
        elif re.fullmatch(r"[\w.-]+\.py", token):
            assert folder, f"{token!r} is named before any folder in: {row}"
            found.append(folder + token)
    return found


def test_every_path_the_map_names_exists():
    rows = the_map()
    assert len(rows) >= 20
    missing = [path for row in rows for path in named_paths(row) if not (ROOT / path.rstrip("/")).exists()]
    assert missing == []


def test_every_room_of_dispatch_is_on_the_map():
    named = {path for row in the_map() for path in named_paths(row)}
    rooms = sorted(p.name for p in (ROOT / "services" / "dispatch").iterdir() if (p / "__init__.py").exists())
    assert len(rooms) >= 6
    absent = [room for room in rooms if not any(n.startswith(f"services/dispatch/{room}/") for n in named)]
    assert absent == []


def test_every_kernel_module_is_on_the_map():
    kernel_row = next(row for row in the_map() if "`fleetline/` (" in row)
    named = set(named_paths(kernel_row))
    modules = {f"fleetline/{p.name}" for p in (ROOT / "fleetline").glob("*.py") if not p.name.startswith("__")}
    assert modules - named == set()


def test_nothing_points_outside_the_repository():
    # The sibling folder's name is spelled as a character class so this file does not itself
    # carry the pointer it looks for.
    outside = re.compile(r"\.\./s[h]ared|(?<![\w/])(?:API|DESIGN|STYLE)\.md")
    hits, read = [], 0
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED and not d.startswith(".venv")]
        for name in names:
            path = Path(folder) / name
            if path.suffix not in TEXT or path == Path(__file__).resolve() or path.stat().st_size > 2_000_000:
                continue
            read += 1
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if outside.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}")
    assert read > 200 and hits == []
