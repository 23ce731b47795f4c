"""`make agent-release [VERSION=x.y.z]`: the agent as one file per platform,
dist/fleetline-agent-<version>-<platform>.pyz, a zipapp built by pex that carries httpx,
cryptography's abi3 manylinux wheels (and cffi's for each Python from 3.9 to 3.14) and the
agent, and runs on the machine's own Python 3.9 or newer with nothing else installed.

pex picks, at start, the wheels that fit the Python running it, and unpacks them once
under PEX_ROOT (the launcher points it into the install prefix). The version is the one
the agent reports: the file's agent/__init__.py says it, rewritten in a staging copy, so
a release built as 1.4.0 says 1.4.0 however the checkout is numbered.

A build tool, not part of the server: it needs pex (a test dependency) and the package
index; the release it writes needs neither."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from fleetline.release_names import VERSION, file_name

ROOT = Path(__file__).resolve().parent.parent
# What the agent imports of the kernel (agent/pyproject.toml names the same five).
KERNEL = ("ethos", "labels", "transport", "private_files", "utf8", "release_names")
PLATFORMS = {"linux-x86_64": "manylinux2014_x86_64", "linux-aarch64": "manylinux2014_aarch64"}
# Every CPython the file runs on: full versions, since cryptography excludes 3.9.0 and 3.9.1.
PYTHONS = ("3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0", "3.14.0")
REQUIREMENTS = ("httpx~=0.28", "cryptography>=44")


def stage(into: Path, version: str) -> None:
    """The agent's sources as the release carries them, its version set."""
    shutil.copytree(ROOT / "agent", into / "agent", ignore=shutil.ignore_patterns("__pycache__", "*.toml"))
    init = into / "agent" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', init.read_text()))
    (into / "fleetline").mkdir()
    (into / "fleetline" / "__init__.py").write_text("")
    for name in KERNEL:
        shutil.copy(ROOT / "fleetline" / f"{name}.py", into / "fleetline" / f"{name}.py")


def build(version: str, platform: str, out_dir: Path, pythons: tuple[str, ...] = PYTHONS,
          patch: Callable[[Path], None] | None = None) -> Path:
    """The release file; `pythons` narrows what it carries wheels for and `patch` changes
    the staged sources (both for tests: a release that fails on purpose)."""
    if not VERSION.fullmatch(version):
        raise SystemExit(f"bad VERSION {version!r}: letters, digits and . + _ - (at most 64)")
    tag = PLATFORMS[platform]
    out = out_dir / file_name(version, platform)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage(Path(tmp), version)
        if patch is not None:
            patch(Path(tmp))
        targets = [arg for py in pythons
                   for arg in ("--platform", f"{tag}-cp-{py}-cp{''.join(py.split('.')[:2])}")]
        subprocess.run([sys.executable, "-m", "pex", "-D", tmp, *REQUIREMENTS, *targets,
                        "-e", "agent.cli:main", "--python-shebang", "/usr/bin/env python3",
                        "-o", str(out)], check=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m fleetline.agent_release")
    checkout = re.search(r'__version__ = "([^"]*)"', (ROOT / "agent" / "__init__.py").read_text())
    assert checkout is not None
    p.add_argument("--version", default=checkout.group(1))
    p.add_argument("--platform", action="append", choices=sorted(PLATFORMS),
                   help="repeatable [every platform]")
    p.add_argument("--out", type=Path, default=ROOT / "dist")
    args = p.parse_args()
    for platform in args.platform or sorted(PLATFORMS):
        out = build(args.version, platform, args.out)
        print(f"{out} {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
