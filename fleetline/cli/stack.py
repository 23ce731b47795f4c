"""The whole fleet on one machine: (embedded) PostgreSQL, migrations, keys, auth, N dispatch
replicas, the console and the gateway as real uvicorn processes, plus optional demo agents.
Used by `fleetline up`, the benchmarks and the end-to-end tests.

`supervise()` is the supervisor's step: a child that died is restarted on the same address
after a backoff (fleetline/restarts.py); a crash loop is reported to the caller."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fleetline.cli.keys import ensure_keys, key_settings
from fleetline.cli.migrate import SERVICE_LOGIN, database_url_as, ensure_service_login, migrate
from fleetline.cli.pgembed import EmbeddedPostgres, free_port
from fleetline.cli.procs import Child, child_env, stop_all, wait_ready
from fleetline.cli.restarts import Restarts
from fleetline.cli.tls import ensure_tls
from fleetline.ethos import Log
from fleetline.private_files import write_private
from fleetline.settings import Settings
from fleetline.transport import is_loopback_host, tls_context

_log = Log("launcher", "stack")
FIRST_ADMIN = "admin"
WILDCARDS = ("0.0.0.0", "::", "")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def served_names(host: str) -> list[str]:
    """The names and addresses a gateway listening on `host` is reached by: the host itself,
    or, listening everywhere, this machine's name and primary address."""
    if host not in WILDCARDS:
        return [host]
    names = [socket.gethostname(), socket.getfqdn()]
    try:  # the address of the default route (a UDP connect sends nothing)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            names.append(probe.getsockname()[0])
    except OSError:
        pass
    return [n for n in dict.fromkeys(names) if n]


@dataclass
class Stack:
    data_dir: Path
    port: int = 8080
    dispatch_replicas: int = 1
    agents: int = 0
    fast_unsafe_db: bool = False
    env: dict[str, str] = field(default_factory=dict)  # on top of os.environ
    # Where the gateway listens, and whether it serves TLS (with a local CA made in
    # DIR/tls); a non-loopback host always does. The services listen on 127.0.0.1 only.
    host: str = "127.0.0.1"
    tls: bool = False
    # The demo agents installed from this agent release (a .pyz of make agent-release) and
    # run by its launcher, as on a managed machine (they can then be upgraded), instead of
    # `python -m agent` from this checkout.
    agent_release: Path | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.children: list[Child] = []
        self.agent_children: list[Child] = []
        self.pg: EmbeddedPostgres | None = None
        self.gateway_url = self.auth_url = self.console_url = ""
        self.dispatch_urls: list[str] = []
        self.tls = self.tls or not is_loopback_host(self.host)
        self.ca_file: str | None = None
        self.admin_token = ""
        self._restarts: dict[str, Restarts] = {}
        self._due: dict[str, float] = {}  # name -> when a dead child starts again

    def _setting(self, name: str) -> str | None:
        return self.env.get(name) or os.environ.get(name) or None

    def _secret_file(self, name: str) -> dict[str, str]:
        """FLEETLINE_CONSOLE_PROXY_SECRET_FILE (say) naming DIR/console-proxy-secret, made once
        (0600), unless the setting is configured."""
        setting = "FLEETLINE_" + name.upper().replace("-", "_")
        if self._setting(setting) or self._setting(setting + "_FILE"):
            return {}
        path = self.data_dir / name
        if not path.exists():
            write_private(path, secrets.token_urlsafe(32) + "\n")
        return {setting + "_FILE": str(path)}

    def _audit_retention_days(self) -> float:
        """FLEETLINE_AUDIT_RETENTION_DAYS, as `fleetline migrate` reads it (it writes the horizon)."""
        return Settings.from_env({**os.environ, **self.env}).audit_retention_days

    def _log_file(self, name: str) -> Path:
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        return logs / f"{name}.log"

    def _start(self, name: str, module: str, port: int, env: dict[str, str],
               host: str = "127.0.0.1") -> tuple[str, Child]:
        child = Child(name, module, ["--port", str(port), "--host", host], child_env({**self.env, **env}),
                      self._log_file(name))
        self.children.append(child)
        return f"http://127.0.0.1:{port}", child

    def _edge(self) -> dict[str, str]:
        """The gateway's TLS settings: a certificate for the names it is reached by, from a
        CA kept in DIR/tls (made once), unless configured."""
        if not self.tls:
            return {}
        if self._setting("FLEETLINE_TLS_CERT_FILE"):
            self.ca_file = self._setting("FLEETLINE_CA_FILE")
            return {}
        files = ensure_tls(self.data_dir / "tls", served_names(self.host))
        self.ca_file = str(files.ca_file)
        return {"FLEETLINE_TLS_CERT_FILE": str(files.cert_file), "FLEETLINE_TLS_KEY_FILE": str(files.key_file)}

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise

    def _start_all(self) -> None:
        database_url = self._setting("FLEETLINE_DATABASE_URL")
        if database_url is None:
            self.pg = EmbeddedPostgres(self.data_dir / "postgres", fast_unsafe=self.fast_unsafe_db)
            owner_url = self.pg.start()
            migrate(owner_url, audit_retention_days=self._audit_retention_days())
            # The services connect as the least-privilege role, never as the superuser.
            password_file = self.pg.data_dir / "service-password"
            if not password_file.exists():
                write_private(password_file, secrets.token_urlsafe(24) + "\n")
            password = password_file.read_text().strip()
            ensure_service_login(owner_url, password)
            database_url = database_url_as(owner_url, SERVICE_LOGIN, password)
        else:
            migrate(database_url, audit_retention_days=self._audit_retention_days())

        token_path = self.data_dir / "admin-token"
        self.admin_token = self._setting("FLEETLINE_ADMIN_TOKEN") or ""
        if not self.admin_token:
            if not token_path.exists():
                write_private(token_path, secrets.token_urlsafe(32) + "\n")
            self.admin_token = token_path.read_text().strip()
        elif not token_path.exists():
            write_private(token_path, self.admin_token + "\n")
        # The keys: the access-token key, and for signed commands a root key (kept here, as
        # the embedded default allows; production keeps it offline), an online key and
        # keyset version 1. Any of them configured in the environment wins.
        ensure_keys(self.data_dir / "keys")
        keys = {name: path for name, path in key_settings(self.data_dir / "keys").items()
                if not (self._setting(name) or self._setting(name.removesuffix("_FILE")))}
        common = {"FLEETLINE_DATABASE_URL": database_url, "FLEETLINE_ADMIN_TOKEN": self.admin_token, **keys}
        if self.dispatch_replicas > 1 and not (self._setting("FLEETLINE_RATE_LIMIT_STORAGE") or "").startswith("redis"):
            _log.warning("rate_limits_not_shared", dispatch_replicas=self.dispatch_replicas,
                         hint="set FLEETLINE_RATE_LIMIT_STORAGE=redis://host:port/db")

        self.auth_url, auth = self._start("auth", "services.auth", free_port(), common)
        wait_ready(self.auth_url, auth)
        dispatch_env = {**common, "FLEETLINE_JWKS_URL": f"{self.auth_url}/.well-known/jwks.json"}
        replicas = [self._start(f"dispatch-{i + 1}", "services.dispatch", free_port(), dispatch_env)
                    for i in range(self.dispatch_replicas)]
        for url, child in replicas:
            wait_ready(url, child)
        self.dispatch_urls = [url for url, _ in replicas]
        port = self.port or free_port()
        edge = self._edge()
        scheme = "https" if self.tls else "http"
        local = f"{scheme}://127.0.0.1:{port}"  # what processes on this machine call
        public = local if self.host in WILDCARDS or is_loopback_host(self.host) else \
            f"{scheme}://{_url_host(self.host)}:{port}"
        # The console calls the admin API through the gateway, like any operator, saying
        # which browser each call is for; the gateway believes it on the secret they share.
        proxy_secret = self._secret_file("console-proxy-secret")
        self.console_url, console = self._start("console", "services.console", free_port(), {
            **proxy_secret,
            "FLEETLINE_CONSOLE_API_URL": local, **({"FLEETLINE_CA_FILE": self.ca_file} if self.ca_file else {}),
            **({} if self._setting("FLEETLINE_CONSOLE_PUBLIC_URL") else {"FLEETLINE_CONSOLE_PUBLIC_URL": public}),
        })
        wait_ready(self.console_url, console)
        gateway_env = {"FLEETLINE_AUTH_URLS": self.auth_url, "FLEETLINE_DISPATCH_URLS": ",".join(self.dispatch_urls),
                       "FLEETLINE_CONSOLE_URLS": self.console_url, **proxy_secret, **edge}
        _, gateway = self._start("gateway", "gateway", port, gateway_env, host=self.host)
        self.gateway_url = public
        wait_ready(self.gateway_url, gateway, ca_file=self.ca_file)
        self._ensure_first_admin()

    def _admin_api(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, f"{self.gateway_url}/api/v1/admin{path}", timeout=30,
                             headers={"Authorization": f"Bearer {self.admin_token}"},
                             verify=tls_context(self.ca_file), **kw)

    def _ensure_first_admin(self) -> None:
        """A named admin, `admin`, with a generated password in DATA_DIR/admin-password (0600):
        the console's first sign-in, so nobody needs the bootstrap token there. Made once; a
        name already taken (by an earlier run, or by hand) is left as it is."""
        password_path = self.data_dir / "admin-password"
        if password_path.exists():
            return
        password = secrets.token_urlsafe(18)
        resp = self._admin_api("POST", "/operators", json={"name": FIRST_ADMIN, "role": "admin",
                                                           "password": password})
        if resp.status_code == 201:
            write_private(password_path, password + "\n")
            _log.info("first_admin_created", name=FIRST_ADMIN, password_file=password_path)
        elif resp.status_code == 409:
            _log.info("first_admin_exists", name=FIRST_ADMIN)
        else:
            resp.raise_for_status()

    def start_agents(self) -> None:
        """The demo agents (`agents` of them), once the services are ready: registered with
        one token, as a site enrolling at once would be."""
        if not self.agents:
            return
        resp = self._admin_api("POST", "/registration-tokens",
                               json={"max_uses": self.agents, "expires_in_s": 3600, "note": "demo agents"})
        resp.raise_for_status()
        token = resp.json()["token"]
        for i in range(1, self.agents + 1):
            state_dir = self.data_dir / "agents" / f"demo-{i}"
            state_dir.mkdir(parents=True, exist_ok=True)
            env = child_env({**self.env, "FLEETLINE_AGENT_REGISTRATION_TOKEN": token})
            args = ["--server", self.gateway_url, "--state-dir", str(state_dir),
                    "--machine-id", f"demo-machine-{i}",
                    "--label", "env=demo", "--label", f"role={'web' if i % 2 else 'db'}"]
            if self.ca_file:
                args += ["--ca-file", self.ca_file]
            if self.agent_release is not None:
                launcher = self._install_agent(self.data_dir / "agents" / f"demo-{i}-install")
                child = Child(f"agent-{i}", None, [launcher, *args], env, self._log_file(f"agent-{i}"))
            else:
                child = Child(f"agent-{i}", "agent", args, env, self._log_file(f"agent-{i}"))
            self.agent_children.append(child)

    def _install_agent(self, prefix: Path) -> str:
        """The release installed into `prefix` (by its own `install`, with this Python); its
        launcher's path."""
        launcher = prefix / "bin" / "fleetline-agent"
        if not launcher.exists():
            assert self.agent_release is not None
            subprocess.run([sys.executable, str(self.agent_release), "install", "--prefix", str(prefix)],
                           check=True, capture_output=True, env=child_env(self.env))
        return str(launcher)

    def ready_line(self) -> str:
        line = (f"ready gateway={self.gateway_url} auth={self.auth_url} "
                f"dispatch={','.join(self.dispatch_urls)} console={self.gateway_url}/console/ "
                f"admin_token_file={self.data_dir / 'admin-token'} "
                f"admin_password_file={self.data_dir / 'admin-password'}")
        return line + (f" ca_file={self.ca_file}" if self.ca_file else "")

    # --- supervision ----------------------------------------------------------------------

    def supervise(self, now: float | None = None) -> str | None:
        """One supervisor step: restart what died (after its backoff). Returns the name of a
        child in a crash loop, for the caller to stop everything."""
        now = time.monotonic() if now is None else now
        watched: list[tuple[str, EmbeddedPostgres | Child]] = []
        if self.pg is not None:
            watched.append(("postgres", self.pg))
        watched += [(c.name, c) for c in self.children + self.agent_children]
        for name, child in watched:
            if child.alive:
                continue
            if name not in self._due:
                if name.startswith("agent-") and child.returncode == 1:
                    continue  # an agent that stopped itself (revoked, refused): not a crash
                restarts = self._restarts.setdefault(name, Restarts())
                restarts.died(now)
                if restarts.crash_loop():
                    return name
                delay = restarts.delay_s()
                self._due[name] = now + delay
                _log.warning("child_exited", child=name, code=child.returncode, restart_in=f"{delay:.0f}s")
            elif now >= self._due[name]:
                del self._due[name]
                try:
                    child.respawn()
                except Exception as exc:  # e.g. postgres failed to come up: counts as a death
                    _log.error("restart_failed", child=name, error=exc)
                    continue
                _log.info("child_restarted", child=name)
        return None

    def stop(self) -> None:
        # Agents first (they talk to the gateway), then the services, then the database.
        stop_all(self.agent_children, timeout=4)
        stop_all(self.children, timeout=6)
        if self.pg is not None:
            self.pg.stop()
