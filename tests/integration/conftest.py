"""Fixtures: a real PostgreSQL (FLEETLINE_TEST_DATABASE_URL or embedded), a fresh migrated
database per test, keys and an admin token, and services as real uvicorn processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from fleetline.cli.keys import key_settings
from fleetline.cli.pgembed import free_port
from fleetline.cli.tls import ensure_tls
from tests.integration.agentproc import AgentProcess
from tests.integration.support import HTTP, ServiceProcess, wait_until

ADMIN_TOKEN = "test-admin-token-" + os.urandom(16).hex()


def signing_env(key_dir: Path) -> dict[str, str]:
    """Every key setting (access tokens, signed commands) for the keys in key_dir."""
    return key_settings(key_dir)


@pytest.fixture
def base_env(database_url, key_dir, databases):
    return {
        "FLEETLINE_DATABASE_URL": databases.service_url(database_url),
        "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN,
        **signing_env(key_dir),
        "FLEETLINE_REGISTRATION_RATE_LIMIT": "100000/minute",
        "FLEETLINE_REGISTRATION_FAILURE_LIMIT": "100000/minute",
        "FLEETLINE_RENEW_RATE_LIMIT": "100000/minute",
        "FLEETLINE_RENEW_FAILURE_LIMIT": "100000/minute",
        "FLEETLINE_CHECKIN_RATE_LIMIT": "100000/minute",
        "FLEETLINE_REPORT_RATE_LIMIT": "100000/minute",
        "FLEETLINE_DB_POOL_MAX": "20",
    }


@pytest.fixture
def start_service(base_env, tmp_path):
    """start_service("services.auth", FLEETLINE_X="...") -> a ready ServiceProcess
    (wait=False: started, not waited for; its wait_ready() later waits once)."""
    started: list[ServiceProcess] = []

    def start(module: str, wait: bool = True, **env: str) -> ServiceProcess:
        proc = ServiceProcess(module, {**base_env, **env}, tmp_path)
        started.append(proc)
        return proc.wait_ready() if wait else proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def auth_started(start_service) -> ServiceProcess:
    """Auth, starting: dispatch and the gateway start beside it instead of after it."""
    return start_service("services.auth", wait=False)


@pytest.fixture
def auth(auth_started) -> ServiceProcess:
    return auth_started.wait_ready()


@pytest.fixture(scope="session")
def tls_dir():
    """A private CA and a gateway certificate for 127.0.0.1 and localhost (ca.pem,
    gateway.pem, gateway.key), and a second CA nobody trusts (other/)."""
    d = Path(tempfile.mkdtemp(prefix="fleetline-test-tls-"))
    ensure_tls(d)
    ensure_tls(d / "other")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def tls_env(tls_dir: Path) -> dict[str, str]:
    return {"FLEETLINE_TLS_CERT_FILE": str(tls_dir / "gateway.pem"),
            "FLEETLINE_TLS_KEY_FILE": str(tls_dir / "gateway.key")}


@pytest.fixture
def admin_headers():
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _redis_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("FLEETLINE_TEST_REDIS_URL")
    if url:
        yield url
        return
    if _redis_up("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/15"
        return
    binary = shutil.which("redis-server")
    # Not skipped when missing: the replica tests matter (.ci/run installs redis-server).
    assert binary, "no Redis: set FLEETLINE_TEST_REDIS_URL, run one on 127.0.0.1:6379, or apt-get install redis-server"
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _redis_up("127.0.0.1", port), 10, what="redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(5)


def create_registration_token(base_url: str, max_uses: int = 1, **extra) -> dict:
    resp = HTTP.post(f"{base_url}/api/v1/admin/registration-tokens",
                      json={"max_uses": max_uses, **extra},
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status_code == 201, resp.text
    return resp.json()


def register(base_url: str, token: str, machine_id: str, hostname: str = "web-01") -> httpx.Response:
    return HTTP.post(f"{base_url}/api/v1/agents/register",
                      json={"registration_token": token, "machine_id": machine_id,
                            "hostname": hostname, "os": "linux", "arch": "x86_64",
                            "agent_version": "1.0.0", "labels": {"env": "test"}})


@pytest.fixture
def start_dispatch(start_service, auth_started):
    def start(**env: str):
        env.setdefault("FLEETLINE_JWKS_URL", f"{auth_started.url}/.well-known/jwks.json")
        proc = start_service("services.dispatch", wait=False, **env)
        auth_started.wait_ready()
        return proc.wait_ready()

    return start


@pytest.fixture
def dispatch(start_dispatch):
    return start_dispatch()


@pytest.fixture
def fleet(auth_started, dispatch):
    from tests.integration.fleet import Fleet

    return Fleet(auth_started.url, dispatch.url)


@pytest.fixture
def start_gateway(base_env, tmp_path):
    """start_gateway([auth urls], [dispatch urls], **env) -> a running gateway process."""
    started = []

    def start(auth_urls, dispatch_urls, wait=True, host="127.0.0.1", **env):
        proc = ServiceProcess("gateway", {**base_env, "FLEETLINE_AUTH_URLS": ",".join(auth_urls),
                                          "FLEETLINE_DISPATCH_URLS": ",".join(dispatch_urls), **env},
                              tmp_path, ready_path="/healthz", host=host)
        started.append(proc)
        return proc.wait_ready() if wait else proc

    yield start
    for p in started:
        p.stop()


# --- a whole fleet: auth, dispatch, the gateway, and real agents on demand ---------------------

FAST = {"FLEETLINE_POLL_INTERVAL_S": "1", "FLEETLINE_RAPID_POLL_INTERVAL_S": "1",
        "FLEETLINE_REAPER_INTERVAL_S": "0.5"}


@pytest.fixture
def stack_env() -> dict:
    """Settings of fleet_stack's services beyond FAST (a test parametrizes it to change them)."""
    return {}


@pytest.fixture
def fleet_stack(start_service, start_gateway, tmp_path, stack_env):
    # Started side by side, then waited for.
    auth = start_service("services.auth", wait=False, **FAST, **stack_env)
    dispatch = start_service("services.dispatch", wait=False,
                             FLEETLINE_JWKS_URL=f"{auth.url}/.well-known/jwks.json", **FAST, **stack_env)
    gw = start_gateway([auth.url], [dispatch.url], wait=False)
    for proc in (auth, dispatch, gw):
        proc.wait_ready()
    agents: list[AgentProcess] = []

    class Stack:
        url = gw.url
        services = {"auth": auth, "dispatch": dispatch, "gateway": gw}

        def api(self, method: str, path: str, who: dict | None = None, **kw) -> httpx.Response:
            """An admin API call as `who` (headers), or as the bootstrap admin."""
            return HTTP.request(method, f"{gw.url}/api/v1/admin{path}",
                                headers=who or {"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kw)

        def agent(self, name="a1", token=None, **kw) -> AgentProcess:
            if token is None and not (tmp_path / name / "state.json").exists():
                token = create_registration_token(gw.url)["token"]
            a = AgentProcess(gw.url, tmp_path / name, f"machine-{name}", token, **kw)
            agents.append(a)
            return a

        def enrol(self, name="a1", token=None) -> str:
            """Register an agent, then stop it: the test changes the world before it runs."""
            a = self.agent(name, token)
            agent_id = self.agent_id(name)
            a.wait_log("agent_started")
            a.stop()
            return agent_id

        def agent_id(self, name="a1") -> str:
            wait_until(lambda: (tmp_path / name / "state.json").exists(), 30, what="registration")
            return json.loads((tmp_path / name / "state.json").read_text())["agent_id"]

        def queue(self, agent_id, ctype, **fields) -> dict:
            r = HTTP.post(f"{gw.url}/api/v1/admin/commands", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                           json={"agent_id": agent_id, "type": ctype, **fields})
            assert r.status_code == 201, r.text
            return r.json()

        def command(self, cid) -> dict:
            return HTTP.get(f"{gw.url}/api/v1/admin/commands/{cid}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()

        def wait_status(self, cid, statuses, timeout=30) -> dict:
            return wait_until(lambda: (c := self.command(cid))["status"] in statuses and c, timeout, 0.1,
                              f"command {cid} to reach {statuses}")

    yield Stack()
    for a in agents:
        a.stop()
