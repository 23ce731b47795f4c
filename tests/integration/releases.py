"""Agent releases for end-to-end tests: real .pyz files built by `fleetline.agent_release`
(pex), installed with their own `install` into a prefix, run by the launcher that install
writes, on the Pythons this machine has (pyenv's 3.9 and 3.13)."""

from __future__ import annotations

import glob
import os
import platform
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from fleetline import agent_release
from tests.integration.support import stop_process, wait_until

PLATFORM = f"linux-{platform.machine()}"
PYTHONS = ("3.9", "3.13")


def python(version: str) -> str:
    """The interpreter of `version` (pyenv's newest): the test fails without it, never skips."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    assert found, f"Python {version} is needed (pyenv install {version}): the agent's file promises it"
    return found[-1]


def _full(version: str) -> str:
    return subprocess.run([python(version), "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()


# A release that fails on purpose: its agent exits at once, or (BROKEN_HOW=hang) never polls.
_BROKEN = """

def main(argv=None):
    import os, time
    if os.environ.get("BROKEN_HOW") == "hang":
        time.sleep(3600)
    return 3
"""


def _broken(staged: Path) -> None:
    cli = staged / "agent" / "cli.py"
    cli.write_text(cli.read_text() + _BROKEN)


def build_all(out: Path, versions: dict[str, bool]) -> dict[str, Path]:
    """{version: path} for each version, built side by side; True marks a broken one."""
    # The Pythons the tests run it on: pyenv's 3.9 and 3.13, and this one (fleetline up's
    # demo agents are installed with it).
    pythons = tuple(dict.fromkeys([*(_full(v) for v in PYTHONS), platform.python_version()]))
    with ThreadPoolExecutor(len(versions)) as pool:
        futures = {v: pool.submit(agent_release.build, v, PLATFORM, out, pythons, _broken if broken else None)
                   for v, broken in versions.items()}
        return {v: f.result() for v, f in futures.items()}


class Installed:
    """One machine: a release installed into `prefix` with Python `py`, run by its launcher."""

    def __init__(self, pyz: Path, prefix: Path, py: str):
        self.prefix, self.py = prefix, py
        self.state_dir = prefix.parent / f"{prefix.name}-state"
        self.log_path = prefix.parent / f"{prefix.name}.log"
        self.proc: subprocess.Popen | None = None
        done = subprocess.run([python(py), str(pyz), "install", "--prefix", str(prefix)],
                              capture_output=True, text=True, env=_clean_env())
        assert done.returncode == 0, done.stderr

    def start(self, server: str, machine_id: str, token: str | None = None, **env: str) -> Installed:
        extra = {"FLEETLINE_AGENT_REGISTRATION_TOKEN": token} if token else {}
        self.proc = subprocess.Popen(
            [str(self.prefix / "bin" / "fleetline-agent"), "--server", server, "--state-dir", str(self.state_dir),
             "--machine-id", machine_id, "--allow-shell"],
            env={**_clean_env(), **extra, **env}, stdin=subprocess.DEVNULL,
            stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT)
        return self

    def agent_id(self) -> str:
        import json
        path = self.state_dir / "state.json"
        wait_until(path.exists, 60, 0.1, "the installed agent to register")
        return json.loads(path.read_text())["agent_id"]

    def current(self) -> str:
        return os.readlink(self.prefix / "current")

    def child(self) -> psutil.Process:
        """The agent the launcher runs now."""
        assert self.proc is not None
        return wait_until(lambda: next(iter(psutil.Process(self.proc.pid).children()), None), 30, 0.01,
                          "the launcher's agent")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)
            self.proc = None


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("FLEETLINE_", "PEX"))}
