"""Starting `fleetline up` in tests and reading its ready line."""

from __future__ import annotations

import signal
import subprocess
import time


def read_ready_line(proc: subprocess.Popen, timeout: float = 120) -> dict[str, str]:
    """The fields of the launcher's `ready gateway=... auth=... dispatch=...` line."""
    deadline = time.monotonic() + timeout
    line = ""
    while "ready" not in line:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, f"launcher exited ({proc.returncode}) before ready"
        assert time.monotonic() < deadline, f"launcher not ready in {timeout:.0f} s"
    return dict(part.split("=", 1) for part in line.split()[1:])


def stop_launcher(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, as an operator's Ctrl-C; SIGKILL only if it does not stop in time."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
