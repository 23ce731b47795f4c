"""Built-in command types. A handler is a plain function (params, ctx) -> Outcome; add one
by writing the function and putting it in HANDLERS."""

from __future__ import annotations

import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from agent import __version__
from agent.stopper import Stopper

GRACE_S = 5.0  # a running command's time to finish after SIGTERM
READ_LIMIT = 1024 * 1024  # keep at most this much of a command's output (its end) in memory
# Once a command's main process has exited: how long its output is still read (what it
# printed last, what a child it left behind prints at once) before its group is ended and
# the result goes. A daemon that keeps the pipe open never holds the result longer.
DRAIN_S = 1.0
# The umask commands run with: the operator's, from before the agent tightened its own.
COMMAND_UMASK = 0o022
# What a command inherits: a usable PATH, HOME and locale, nothing of the agent's
# configuration or secrets. `params.env` adds to it.
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/", "LANG": "C.UTF-8"}


@dataclass
class Outcome:
    status: str  # succeeded | failed
    exit_code: int | None
    output: bytes | str  # made acceptable (UTF-8, no NUL, 64 KiB) by agent.results.fit_output
    note: str = ""  # the agent's own word on how it ended, kept within the output's budget
    cancelled: bool = False  # a verified cancel stopped it


def _discard(data: bytes) -> None:
    pass


@dataclass
class Context:
    stopper: Stopper
    deadline: float  # time.monotonic() by which the command must be done (run_timeout_s)
    allow_shell: bool
    output: Callable[[bytes], None] = _discard  # what the command prints, as it comes (live output)
    cancelled: threading.Event = field(default_factory=threading.Event)  # set by a verified cancel

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


INTERRUPTED = Outcome("failed", None, "interrupted")


def cancelled(output: bytes | str = b"", exit_code: int | None = None, how: str = "") -> Outcome:
    """A command a verified cancel stopped (or kept from starting), with its output so far."""
    return Outcome("failed", exit_code, output, f"[cancelled{': ' + how if how else ''}]", cancelled=True)


def command_env(extra: object) -> dict[str, str] | str:
    """The clean environment for a command, or why `params.env` is unusable."""
    env = dict(BASE_ENV)
    env["PATH"] = os.environ.get("PATH", BASE_ENV["PATH"])
    env["HOME"] = os.environ.get("HOME", BASE_ENV["HOME"])
    env["LANG"] = os.environ.get("LANG", BASE_ENV["LANG"])
    if extra is None:
        return env
    if not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\x00" not in k + v
            for k, v in extra.items()):
        return "params.env must map variable names to strings"
    env.update(extra)
    return env


def ping(params: dict, ctx: Context) -> Outcome:
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    return Outcome("succeeded", 0, json.dumps({"agent_version": __version__, "time": now}))


def _meminfo_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _uptime_s() -> float | None:
    try:
        with open("/proc/uptime") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def facts(params: dict, ctx: Context) -> Outcome:
    disk = shutil.disk_usage("/")
    return Outcome("succeeded", 0, json.dumps({
        "hostname": socket.gethostname(),
        "os": platform.system().lower(),
        "os_release": platform.platform(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _meminfo_bytes(),
        "disk_total_bytes": disk.total,
        "disk_free_bytes": disk.free,
        "uptime_s": _uptime_s(),
        "agent_version": __version__,
    }))


def sleep(params: dict, ctx: Context) -> Outcome:
    seconds = params.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 86400:
        return Outcome("failed", None, "params.seconds must be a number from 0 to 86400")
    allowed = min(float(seconds), max(0.0, ctx.remaining()))
    deadline = time.monotonic() + allowed
    while (left := deadline - time.monotonic()) > 0:
        if ctx.cancelled.wait(min(left, 0.1)):
            return cancelled()
        if ctx.stopper.stopping:
            if left > GRACE_S:
                return INTERRUPTED
            time.sleep(max(0.0, left))  # within the grace: let it finish
            break
    if allowed < seconds:
        return Outcome("failed", None, "", f"[run timeout: stopped after {allowed:.0f} s]")
    return Outcome("succeeded", 0, f"slept {seconds} s")


def shell(params: dict, ctx: Context) -> Outcome:
    """Runs argv directly (never through a shell) in a clean environment, reading its
    output as it comes; killed at its timeout, and its whole process group killed when it
    exits, so background children neither outlive it nor hold its output open. A cancel
    sends the group SIGTERM, and SIGKILL GRACE_S later if its process is still there."""
    if not ctx.allow_shell:
        return Outcome("failed", None, "shell commands are disabled on this agent (start it with --allow-shell)")
    argv = params.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and "\x00" not in a for a in argv):
        return Outcome("failed", None, "params.argv must be a non-empty list of strings")
    timeout = params.get("timeout_s", 60)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        return Outcome("failed", None, "params.timeout_s must be a positive number")
    env = command_env(params.get("env"))
    if isinstance(env, str):
        return Outcome("failed", None, env)
    limit = min(float(timeout), max(0.0, ctx.remaining()))
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                umask=COMMAND_UMASK, close_fds=True)
    except OSError as exc:
        return Outcome("failed", None, f"cannot start {argv[0]}: {exc.strerror}")
    output = bytearray()

    def keep(chunk: bytes) -> None:
        ctx.output(chunk)
        output.extend(chunk)
        if len(output) > READ_LIMIT:
            del output[: len(output) - READ_LIMIT]  # keep the end

    stdout = proc.stdout
    assert stdout is not None  # stdout=PIPE
    reader = PipeReader(stdout.fileno(), keep)
    started = time.monotonic()
    killed_for = None
    while proc.poll() is None:
        if ctx.cancelled.is_set():
            _signal_group(proc, signal.SIGTERM)
            killed_for = "cancelled" if _wait_exit(proc, GRACE_S) else "cancelled: SIGKILL after SIGTERM"
            break
        if ctx.stopper.stopping:
            if not _wait_exit(proc, GRACE_S):
                killed_for = "interrupted"
            break
        if time.monotonic() - started >= limit:
            killed_for = f"[timeout: killed after {limit:.0f} s]"
            break
        ctx.stopper.sleep(0.05)
    if killed_for is None:
        reader.wait(DRAIN_S)  # the command is over: its last words, briefly
    _kill(proc)  # the group: whatever it left behind goes too, and its end of the pipe
    proc.wait()
    reader.stop()  # a process that left the group (setsid) may hold the pipe forever
    stdout.close()
    if killed_for == "interrupted":
        return INTERRUPTED
    if killed_for and killed_for.startswith("cancelled"):
        return cancelled(bytes(output), proc.returncode, killed_for.partition(": ")[2] or "SIGTERM")
    if killed_for:
        return Outcome("failed", proc.returncode, bytes(output), killed_for)
    return Outcome("succeeded" if proc.returncode == 0 else "failed", proc.returncode, bytes(output))


class PipeReader:
    """Reads a command's output pipe as it fills, in a thread of its own (the command never
    blocks on a full pipe), until the pipe ends or `stop()`. A blocking read could not be
    stopped: a daemon that left the command's process group keeps the pipe open, and the
    read (and the result behind it) would wait for the daemon to exit."""

    POLL_S = 0.05
    GRACE_S = 0.2  # after the group is killed: the pipe normally ends at once

    def __init__(self, fd: int, sink: Callable[[bytes], None]):
        self.fd, self.sink = fd, sink
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipe-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        after_stop = 0
        while after_stop <= READ_LIMIT:
            stopping = self._stopping.is_set()
            if not poller.poll(0 if stopping else self.POLL_S * 1000):
                if stopping:
                    return  # nothing more is waiting: what a daemon prints later is not ours
                continue
            data = os.read(self.fd, 65536)
            if not data:
                return  # every writer has closed it
            self.sink(data)
            if stopping:
                after_stop += len(data)  # a daemon flooding the pipe cannot keep us here

    def wait(self, seconds: float) -> None:
        """Until the pipe ends, at most `seconds`."""
        self._thread.join(seconds)

    def stop(self) -> None:
        """Take what is waiting in the pipe now, then end (the caller closes the pipe)."""
        self._thread.join(self.GRACE_S)
        self._stopping.set()
        self._thread.join()


def _wait_exit(proc: subprocess.Popen, seconds: float) -> bool:
    try:
        proc.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the whole process group: children of argv too
    except (ProcessLookupError, PermissionError):
        pass


def _kill(proc: subprocess.Popen) -> None:
    _signal_group(proc, signal.SIGKILL)


HANDLERS: dict[str, Callable[[dict, Context], Outcome]] = {
    "ping": ping,
    "facts": facts,
    "sleep": sleep,
    "shell": shell,
}


def run(ctype: str, params: dict, ctx: Context) -> Outcome:
    handler = HANDLERS.get(ctype)
    if handler is None:
        return Outcome("failed", None, f"unknown command type: {ctype}")
    try:
        return handler(params if isinstance(params, dict) else {}, ctx)
    except Exception as exc:  # a handler bug must not stop the agent; it is reported
        return Outcome("failed", None, f"handler error: {type(exc).__name__}: {exc}")
