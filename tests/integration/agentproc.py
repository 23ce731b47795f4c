"""A real agent process (`python -m agent`) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.integration.support import ROOT, stop_process, wait_until


class AgentProcess:
    def __init__(self, server: str, state_dir: Path, machine_id: str, token: str | None = None,
                 allow_shell: bool = True, extra_args: list[str] | None = None):
        self.state_dir = state_dir
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        args = [sys.executable, "-m", "agent", "--server", server, "--state-dir", str(state_dir),
                "--machine-id", machine_id]
        if allow_shell:
            args.append("--allow-shell")
        args += extra_args or []
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}
        if token:  # a secret: never in argv
            env["FLEETLINE_AGENT_REGISTRATION_TOKEN"] = token
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 60) -> None:
        wait_until(lambda: text in self.log(), timeout, 0.05, f"agent log line {text!r}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)
