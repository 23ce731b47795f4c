"""Agent releases for end-to-end tests: real .pyz files built by `fleetline.agent_release`
(pex), installed with their own `install` into a prefix, run by the launcher that install
writes, on the Pythons this machine has (pyenv's 3.9 and 3.13)."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import psutil

from fleetline import agent_release
from fleetline.release_names import file_name
from tests.integration.conftest import ADMIN_TOKEN, create_registration_token
from tests.integration.support import ROOT, stop_process, wait_until

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


def _build_all(out: Path, versions: dict[str, bool], pythons: tuple[str, ...]) -> dict[str, Path]:
    """{version: path} for each version, built side by side; True marks a broken one."""
    with ThreadPoolExecutor(len(versions)) as pool:
        futures = {v: pool.submit(agent_release.build, v, PLATFORM, out, pythons, _broken if broken else None)
                   for v, broken in versions.items()}
        return {v: f.result() for v, f in futures.items()}


def _sources_key(versions: dict[str, bool], pythons: tuple[str, ...]) -> str:
    """What the files depend on: the agent's sources, the kernel it carries, the build, the
    broken variant, the versions and the Pythons."""
    digest = hashlib.sha256(json.dumps([versions, pythons], sort_keys=True).encode())
    files = sorted([*(ROOT / "agent").glob("*.py"), *(ROOT / "fleetline" / f"{k}.py" for k in agent_release.KERNEL),
                    ROOT / "fleetline" / "agent_release.py", Path(__file__)])
    for path in files:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:20]


def build_all(versions: dict[str, bool]) -> dict[str, Path]:
    """The releases, built once for every test module and worker of a run (and reused by
    later runs while the sources are the same): a build takes tens of seconds of CPU. A
    lock makes a second worker wait for the first's build; files appear only when whole."""
    # The Pythons the tests run it on: pyenv's 3.9 and 3.13, and this one (fleetline up's
    # demo agents are installed with it).
    pythons = tuple(dict.fromkeys([*(_full(v) for v in PYTHONS), platform.python_version()]))
    cache = Path(tempfile.gettempdir()) / "fleetline-test-releases" / _sources_key(versions, pythons)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = {v: cache / file_name(v, PLATFORM) for v in versions}
        if not all(p.is_file() for p in wanted.values()):
            staging = Path(tempfile.mkdtemp(dir=cache.parent))
            try:
                built = _build_all(staging, versions, pythons)
                cache.mkdir(exist_ok=True)
                for v, path in built.items():
                    os.replace(path, wanted[v])
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return wanted


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


# --- what the end-to-end tests of releases share (test_agent_upgrade_e2e.py,
# test_agent_release_cli_e2e.py) -------------------------------------------------------

OLD, NEW, BROKEN = "7.1.0", "7.2.0", "7.3.0"


def release_builds() -> dict[str, Path]:
    """Two good releases and one that fails on purpose (BROKEN_HOW: exit or hang)."""
    return build_all({OLD: False, NEW: False, BROKEN: True})


def upload(stack, version: str, path, platform: str = PLATFORM) -> dict:
    r = stack.api("POST", f"/agent-releases?version={version}&platform={platform}",
                  {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/octet-stream"},
                  content=path.read_bytes())
    assert r.status_code == 201, r.text
    return r.json()


def machine(stack, builds, tmp_path, name: str, py: str = "3.9", version: str = OLD) -> Installed:
    inst = Installed(builds[version], tmp_path / name, py)
    return inst.start(stack.url, f"machine-{name}", create_registration_token(stack.url)["token"])


@contextlib.contextmanager
def answering_on_old(m: Installed, stack) -> Iterator[tuple[Installed, str]]:
    """An installed machine enrolled and answering on the old release; stopped after."""
    try:
        agent_id = m.agent_id()
        assert ping_version(stack, agent_id) == OLD
        yield m, agent_id
    finally:
        m.stop()


def ping_version(stack, agent_id: str) -> str:
    cmd = stack.queue(agent_id, "ping")
    done = stack.wait_status(cmd["id"], {"succeeded", "failed", "timed_out"}, timeout=60)
    assert done["status"] == "succeeded", done
    return json.loads(done["result"]["output"])["agent_version"]


def upgrade(stack, agent_id: str, version: str, **params) -> dict:
    cmd = stack.queue(agent_id, "agent.upgrade", params={"version": version, **params})
    return stack.wait_status(cmd["id"], {"succeeded", "failed", "timed_out", "rejected"}, timeout=90)


def listed_version(stack, agent_id: str) -> str:
    return stack.api("GET", f"/agents/{agent_id}").json()["agent_version"]


def fleetline_cli(*args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}
    return subprocess.run([sys.executable, "-m", "fleetline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**clean, "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN})
