"""Real parts for tests: PostgreSQL databases migrated by yoyo, and services as real
uvicorn processes on free loopback ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Callable

import httpx

from fleetline.cli.pgembed import free_port
from fleetline.transport import tls_context

ROOT = Path(__file__).resolve().parents[2]

# One client for the tests' own HTTP calls. httpx's module functions (httpx.get, ...) build
# a client per call, and with it an SSL context: about 50 ms of CPU each, which slowed
# every readiness poll and starved the services starting beside it. It keeps no cookies
# (a policy that accepts none), so no test's session leaks into another's.
HTTP = httpx.Client(timeout=30, cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])))


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.02,
               what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def cmdline(proc) -> str:
    """A psutil process's command line, or "" once it has died (a zombie not reaped yet, or
    gone): children of a launcher come and go while tests look at them."""
    import psutil

    try:
        return " ".join(proc.cmdline())
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return ""


def metric(service_url: str, name: str) -> float:
    """One unlabelled metric of a service process, as it is now (-1: not there)."""
    text = HTTP.get(f"{service_url}/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1


def held_polls(dispatch_url: str) -> float:
    """How many long polls one dispatch process has parked right now (its metrics)."""
    return metric(dispatch_url, "fleetline_held_polls")


class ServiceProcess:
    """`python -m <module> --port N` with the given environment, ready when /readyz is 200."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path, ready_path: str = "/readyz",
                 port: int | None = None, host: str = "127.0.0.1"):
        self.port = port or free_port()
        # Served over TLS when given a certificate: `client` then trusts the CA beside it.
        tls = env.get("FLEETLINE_TLS_CERT_FILE")
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.client = HTTP if not tls else httpx.Client(
            timeout=30, verify=tls_context(str(Path(tls).parent / "ca.pem")))
        self.log_path = log_dir / f"{module.replace('.', '_')}_{self.port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}
        full_env.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(self.port), "--host", host],
            cwd=ROOT,
            env=full_env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.ready_path = ready_path
        self._ready = False

    def wait_ready(self, timeout: float = 20.0) -> "ServiceProcess":
        if self._ready:
            return self

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited early:\n{self.log()}")
            try:
                answered = self.client.get(self.url + self.ready_path, timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False
            # Ready only if the answer came from this process: another one on the same port
            # (it lost a race for the port) would make every later failure a riddle.
            return answered and self._listening()

        wait_until(ready, timeout, 0.05, f"{self.url} to be ready")
        self._ready = True
        return self

    def _listening(self) -> bool:
        import psutil

        me = psutil.Process(self.proc.pid)
        for proc in (me, *me.children(recursive=True)):
            try:
                if any(c.laddr.port == self.port and c.status == psutil.CONN_LISTEN
                       for c in proc.net_connections("tcp")):
                    return True
            except psutil.Error:
                continue
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, and SIGKILL if it is still there after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
