"""The launcher: `PREFIX/bin/fleetline-agent`, a small supervisor that upgrades never
replace. It runs the current release (`PREFIX/current/fleetline-agent.pyz`) with the
agent's usual options and carries out what an upgrade asks of it:

    the agent stages release B beside A, writes upgrade.json (pending, A -> B, a deadline),
    points `current` at B and exits RESTART
    -> the launcher starts B and watches:
       B completes an authenticated poll and marks the upgrade confirmed: done
       B exits, or the deadline passes first: `current` back to A, the upgrade marked
       rolled_back with the reason, A started again (A reports the command failed)

Any other exit of the agent while an upgrade is pending (it was killed mid-download, or
between switching and exiting) rolls back the same way: after a crash at any moment one
release or the other is in charge, never none. Outside an upgrade, an agent that exits
unexpectedly is started again after a backoff; one that exits BAD_CONFIG is not.

Standard library only, Python 3.9: this file is copied as the launcher at install time
(install.py) and imported by the agent for the layout (Layout) it shares with it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

RESTART = 75  # the agent switched `current`: start it again at once
BAD_CONFIG = 2  # the agent's options are wrong: starting it again would not help
PYZ = "fleetline-agent.pyz"
STOP_GRACE_S = 15.0


class Layout:
    """PREFIX/releases/<version>/fleetline-agent.pyz, PREFIX/current -> releases/<version>,
    PREFIX/bin/fleetline-agent, PREFIX/upgrade.json (an upgrade in progress) and its lock."""

    def __init__(self, prefix: Path):
        self.prefix = Path(prefix)
        self.releases = self.prefix / "releases"
        self.current = self.prefix / "current"
        self.launcher = self.prefix / "bin" / "fleetline-agent"
        self.state_file = self.prefix / "upgrade.json"
        self.pex_root = self.prefix / ".pex"  # where the release's wheels are unpacked

    def release_dir(self, version: str) -> Path:
        return self.releases / version

    def current_version(self) -> Optional[str]:
        try:
            return os.readlink(self.current).rstrip("/").rsplit("/", 1)[-1]
        except OSError:
            return None

    def switch(self, version: str) -> None:
        """Point `current` at a release: a new symlink renamed over the old one, so at
        every moment `current` names one release or the other."""
        tmp = self.prefix / f".current.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(f"releases/{version}", tmp)
        os.replace(tmp, self.current)
        _fsync_dir(self.prefix)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The agent and the launcher read and change upgrade.json under one lock, so a
        confirmation and a rollback at the same moment cannot both win."""
        with open(self.prefix / "upgrade.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read_upgrade(self) -> Optional[dict]:
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # half-written cannot happen (write_upgrade renames)
            return {"state": "rolled_back", "reason": "upgrade state unreadable"}
        return state if isinstance(state, dict) else None

    def write_upgrade(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)
        _fsync_dir(self.prefix)

    def clear_upgrade(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def roll_back(self, reason: str) -> Optional[dict]:
        """A pending upgrade undone: `current` to the release before it, the reason kept
        for that release's agent to report. None when nothing was pending."""
        with self.locked():
            state = self.read_upgrade()
            if state is None or state.get("state") != "pending":
                return None
            previous = state.get("previous")
            if isinstance(previous, str) and (self.release_dir(previous) / PYZ).is_file():
                self.switch(previous)
            state.update(state="rolled_back", reason=reason)
            self.write_upgrade(state)
            return state


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _log(level: str, event: str, **fields: object) -> None:
    """The ETHOS format, as the agent logs (agent/log.py is not importable from here)."""
    pairs = " ".join(f'{k}="{v}"' if " " in str(v) else f"{k}={v}" for k, v in fields.items() if v is not None)
    print(f"[{level}] [agent] [launcher] {event} {pairs}".rstrip(), file=sys.stderr, flush=True)


class Launcher:
    def __init__(self, layout: Layout, args: List[str], python: str = sys.executable):
        self.layout, self.args, self.python = layout, args, python
        self.child: Optional[subprocess.Popen] = None
        self.stopping = False
        self.backoff_s = 1.0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)  # the agent stops its commands within their grace

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, PEX_ROOT=str(self.layout.pex_root), FLEETLINE_AGENT_INSTALL_DIR=str(self.layout.prefix))
        version = self.layout.current_version()
        _log("INFO", "agent_starting", version=version)
        return subprocess.Popen([self.python, str(self.layout.current / PYZ), *self.args], env=env)

    def _stop_child(self, child: subprocess.Popen) -> None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def _watch(self, child: subprocess.Popen, deadline: float) -> Optional[int]:
        """While an upgrade is pending: the child's exit code if it exits first, None once
        the upgrade is settled (confirmed). The deadline passing rolls back."""
        while True:
            code = child.poll()
            if code is not None:
                return code
            state = self.layout.read_upgrade()
            if state is None or state.get("state") != "pending":
                return None
            if time.time() >= deadline:
                version = self.layout.current_version()
                if self.layout.roll_back(f"version {version} did not complete a poll in time") is not None:
                    _log("WARNING", "upgrade_rolled_back", version=version, reason="no poll in time")
                    self._stop_child(child)
                    return RESTART
                return None
            time.sleep(0.2)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        while True:
            began = time.monotonic()
            self.child = child = self._start()
            state = self.layout.read_upgrade()
            code: Optional[int] = None
            if state is not None and state.get("state") == "pending":
                deadline = float(state.get("deadline") or 0)
                code = self._watch(child, deadline)
            if code is None:
                code = child.wait()
            if self.stopping:
                return code
            if code != RESTART and self.layout.roll_back(f"the agent exited with {code} during the upgrade"):
                _log("WARNING", "upgrade_rolled_back", exit_code=code)
                continue
            if code == RESTART:
                continue
            if code == 0 or code == BAD_CONFIG:
                return code
            if time.monotonic() - began > 60:
                self.backoff_s = 1.0
            _log("WARNING", "agent_exited", exit_code=code, restart_in_s=self.backoff_s)
            time.sleep(self.backoff_s)
            self.backoff_s = min(self.backoff_s * 2, 60.0)
            if self.stopping:
                return code


def main(argv: Optional[List[str]] = None) -> int:
    prefix = Path(os.path.realpath(sys.argv[0])).parent.parent
    return Launcher(Layout(prefix), list(sys.argv[1:] if argv is None else argv)).run()


if __name__ == "__main__":
    sys.exit(main())
