"""Child processes that die with their parent, and waiting for them to be ready."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from fleetline.transport import tls_context

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class Child:
    """`python -m <module> [args]`; SIGTERM'd if the launcher itself dies. `respawn()`
    starts it again exactly as before (same arguments, so the same address)."""

    def __init__(self, name: str, module: str | None, args: list[str], env: dict[str, str],
                 log: Path | None, cwd: Path | None = None):
        """`module` None: `args` is the whole command (a program that is not a module of ours)."""
        self.name = name
        self._argv = [sys.executable, "-m", module, *args] if module else list(args)
        self._env, self._log, self._cwd = env, log, cwd
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        if self._log is None:
            return self._popen(subprocess.DEVNULL)
        with open(self._log, "ab") as log:  # the child has its own copy of the file
            return self._popen(log)

    def _popen(self, out: IO[bytes] | int) -> subprocess.Popen:
        return subprocess.Popen(self._argv, env=self._env, cwd=self._cwd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def respawn(self) -> None:
        self.proc = self._spawn()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def wait_ready(url: str, child: Child | None, timeout: float = 30.0, ca_file: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0, verify=tls_context(ca_file)) as client:
        while time.monotonic() < deadline:
            if child is not None and not child.alive:
                raise RuntimeError(f"{child.name} exited during start-up (exit code {child.proc.returncode})")
            try:
                if client.get(url + "/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"{url} was not ready within {timeout:.0f}s")


def stop_all(children: list[Child], timeout: float = 8.0) -> None:
    """SIGTERM everyone at once, then wait; whoever is still up at the deadline is killed."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        child.wait(max(0.1, deadline - time.monotonic()))


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
