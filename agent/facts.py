"""What the agent says of its machine (docs/api.md, facts): the built-in facts, and every
`*.json` file of the facts directory under `custom.<file stem>`. Read, never executed: a
facts file is parsed as JSON and nothing else. Reported at start, every `facts_interval_s`
the server gives in its poll answers, and for the `facts` command. A report is made to fit
the server's limits (64 KiB, depth 8): custom facts that would not fit are left out, said
once in the log.

Python 3.9 (the agent's own distribution)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from agent import __version__
from agent.log import Log

log = Log()
MAX_BYTES, MAX_DEPTH = 64 * 1024, 8
DEFAULT_DIR = Path("/etc/fleetline/facts.d")
GB = 1024 ** 3
RETRY_S = 60.0  # after a report that failed


def _os_release() -> dict:
    fields: Dict[str, str] = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            for line in Path(path).read_text(errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    fields[key.strip()] = value.strip().strip('"')
            break
        except OSError:
            continue
    family = (fields.get("ID_LIKE") or fields.get("ID") or platform.system().lower()).split()[0]
    return {"name": fields.get("NAME", platform.system()), "id": fields.get("ID", platform.system().lower()),
            "version": fields.get("VERSION_ID", ""), "family": family}


def _memory_mb() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _disks() -> List[dict]:
    seen, out = set(), []
    mounts = ["/"]
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[0].startswith("/dev/") and parts[1] not in mounts:
                mounts.append(parts[1].replace("\\040", " "))
    except OSError:
        pass
    for mount in mounts[:32]:
        try:
            usage = shutil.disk_usage(mount)
        except OSError:
            continue
        key = (usage.total, usage.free)
        if key in seen and mount != "/":
            continue
        seen.add(key)
        out.append({"mount": mount, "total_gb": round(usage.total / GB, 2), "free_gb": round(usage.free / GB, 2)})
    return out


def _addresses() -> List[str]:
    found = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]))
    except OSError:
        pass
    return sorted(a for a in found if not a.startswith("127.") and a != "::1")


def _boot_time() -> Optional[str]:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(line.split()[1])))
    except (OSError, ValueError):
        pass
    return None


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _size(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def builtin() -> dict:
    disks = _disks()
    root = next((d for d in disks if d["mount"] == "/"), None)
    return {
        "os": _os_release(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "hostname": socket.gethostname(),
        "fqdn": socket.getfqdn(),
        "cpu_count": os.cpu_count(),
        "memory_mb": _memory_mb(),
        "disks": disks,
        "disk_free_gb": root["free_gb"] if root else None,
        "addresses": _addresses(),
        "boot_time": _boot_time(),
        "agent_version": __version__,
        "python_version": platform.python_version(),
    }


def collect(facts_dir: Optional[Path]) -> dict:
    """Every fact, made to fit: custom files that are not JSON, or would not fit, left out."""
    facts = builtin()
    custom: Dict[str, object] = {}
    if facts_dir is not None and facts_dir.is_dir():
        for path in sorted(facts_dir.glob("*.json"))[:256]:
            try:
                value = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("facts", "facts_file_unreadable", file=path.name, error=exc)
                continue
            if _depth(value) > MAX_DEPTH - 2:  # under custom.<stem>
                log.warning("facts", "facts_file_too_deep", file=path.name)
                continue
            trial = dict(custom, **{path.stem: value})
            if _size({**facts, "custom": trial}) > MAX_BYTES:
                log.warning("facts", "facts_file_too_large", file=path.name)
                continue
            custom = trial
    if custom:
        facts["custom"] = custom
    return facts


class Reporter:
    """Sends the facts at start and whenever `facts_interval_s` has passed since the last
    report, in its own thread (a poll never waits for it)."""

    def __init__(self, facts_dir: Optional[Path], send: Callable[[dict], object]):
        self.facts_dir, self.send = facts_dir, send
        self.interval_s = 3600.0
        self._last = 0.0
        self._lock = threading.Lock()
        self._busy = False

    def due(self, interval_s: Optional[float] = None, now: Optional[float] = None) -> bool:
        if interval_s is not None and interval_s > 0:
            self.interval_s = float(interval_s)
        now = time.monotonic() if now is None else now
        return self._last == 0.0 or now - self._last >= self.interval_s

    def report_if_due(self, interval_s: Optional[float] = None) -> None:
        with self._lock:
            if self._busy or not self.due(interval_s):
                return
            self._busy = True
            self._last = time.monotonic()
        threading.Thread(target=self._report, name="facts", daemon=True).start()

    def report_now(self) -> None:
        """At once, in the caller's thread (an operator asked): the poll after it sees the
        report newer than the request."""
        with self._lock:
            self._last = time.monotonic()
        self._report()

    def _report(self) -> None:
        try:
            self.send(collect(self.facts_dir))
        except Exception as exc:  # tried again in a minute
            log.warning("facts", "facts_report_failed", error=exc)
            with self._lock:
                self._last = time.monotonic() - self.interval_s + RETRY_S
        finally:
            with self._lock:
                self._busy = False

