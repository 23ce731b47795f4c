"""A real agent and the wire: it enrols over TLS it verifies, refuses a certificate from
another CA and plain HTTP to a non-loopback server, and pins a command-signing root key only
when something vouches for it; a root key swapped on the way is refused before anything is
kept or run."""

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from agent import trust
from fleetline.cli.keys import ROOT_PUB, make_root
from fleetline.cli.pgembed import free_port
from fleetline.signing import b64url, public_raw, sign_keyset
from tests.integration.agentproc import AgentProcess
from tests.integration.conftest import ADMIN_TOKEN, create_registration_token, tls_env
from tests.integration.support import HTTP, ROOT, wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _lan_address() -> str:
    """An address of this machine that is not loopback (the agent must treat it as remote)."""
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family.name == "AF_INET" and not a.address.startswith("127."):
                return a.address
    raise AssertionError("this machine has no non-loopback IPv4 address to test with")


def _fingerprint(key_dir: Path) -> str:
    return trust.fingerprint((key_dir / ROOT_PUB).read_text())


def _queue_and_wait(url: str, agent_id: str, client=HTTP) -> dict:
    cmd = client.post(f"{url}/api/v1/admin/commands", headers=ADMIN,
                      json={"agent_id": agent_id, "type": "ping"}).json()

    def final():
        got = client.get(f"{url}/api/v1/admin/commands/{cmd['id']}", headers=ADMIN).json()
        return got if got["status"] not in ("pending", "sent", "running") else None

    return wait_until(final, 30, 0.1, "the command to end")


def _agent_id(state_dir: Path) -> str | None:
    """The agent id in its state file; None while it has none (cleared, registering again)."""
    return json.loads((state_dir / "state.json").read_text()).get("agent_id")


def test_an_agent_enrols_over_tls_it_verifies_with_its_ca_file(start_gateway, auth, dispatch, tls_dir,
                                                               tmp_path, sql):
    gw = start_gateway([auth.url], [dispatch.url], **tls_env(tls_dir))
    token = create_registration_token(auth.url)["token"]
    agent = AgentProcess(gw.url, tmp_path / "tls-agent", "m-tls", token,
                         extra_args=["--ca-file", str(tls_dir / "ca.pem")])
    try:
        agent.wait_log("agent_started")
        # Pinned from an answer over verified TLS: allowed, and said.
        assert "root_key_pinned source=verified_tls" in agent.log()
        done = _queue_and_wait(gw.url, _agent_id(tmp_path / "tls-agent"), gw.client)
        assert done["status"] == "succeeded"
    finally:
        agent.stop()


def test_an_agent_refuses_a_certificate_from_another_ca(start_gateway, auth, dispatch, tls_dir, tmp_path, sql):
    gw = start_gateway([auth.url], [dispatch.url], **tls_env(tls_dir))
    token = create_registration_token(auth.url)
    agent = AgentProcess(gw.url, tmp_path / "wrong-ca", "m-wrong-ca", token["token"],
                         extra_args=["--ca-file", str(tls_dir / "other" / "ca.pem")])
    try:
        agent.wait_log("CERTIFICATE_VERIFY_FAILED")
        assert agent.proc.poll() is None  # it keeps trying (a man in the middle may go away)
        # Nothing was sent: no registration, no use of the token.
        assert sql.execute("SELECT count(*) FROM agents").fetchone()[0] == 0
        assert sql.execute("SELECT uses FROM registration_tokens").fetchone()[0] == 0
    finally:
        agent.stop()


def test_an_agent_refuses_plain_http_to_a_non_loopback_server(tmp_path):
    done = subprocess.run([sys.executable, "-m", "agent", "--server", f"http://{_lan_address()}:9",
                           "--state-dir", str(tmp_path / "s")], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/bin:/bin",
                                           "FLEETLINE_AGENT_REGISTRATION_TOKEN": "flreg_never-sent"})
    assert done.returncode == 2
    assert "[ERROR] [agent] [config] insecure_server" in done.stderr
    assert "flreg_never-sent" not in done.stderr


def test_over_allowed_plain_http_a_root_key_is_pinned_only_against_its_fingerprint(
        start_gateway, auth, dispatch, tmp_path, key_dir, sql):
    gw = start_gateway([auth.url], [dispatch.url], host="0.0.0.0", FLEETLINE_ALLOW_PLAINTEXT="1")
    remote = f"http://{_lan_address()}:{gw.port}"
    token = create_registration_token(auth.url)["token"]
    state = tmp_path / "plain"
    blind = AgentProcess(remote, state, "m-plain", token, extra_args=["--insecure-http"])
    assert blind.proc.wait(30) == 1
    assert "plaintext_http_allowed" in blind.log()
    assert "refusing to pin a root key received over plain HTTP" in blind.log()
    assert not (state / "state.json").exists()  # registered, but nothing kept
    # With the fingerprint printed beside the token, the same answer is vouched for; the
    # registration is a retry (its credentials were never used): the same agent.
    first_id = sql.execute("SELECT id::text FROM agents").fetchone()[0]
    vouched = AgentProcess(remote, state, "m-plain", token,
                           extra_args=["--insecure-http", "--root-key-sha256", _fingerprint(key_dir)])
    try:
        vouched.wait_log("agent_started")
        assert "root_key_pinned source=fingerprint" in vouched.log()
        assert _agent_id(state) == first_id
        assert _queue_and_wait(gw.url, first_id)["status"] == "succeeded"
    finally:
        vouched.stop()


@pytest.fixture
def swapping_proxy(start_gateway, auth, dispatch, tmp_path):
    """A network between agent and gateway that offers its own root key and keyset at
    registration (the first-contact attack), over plaintext loopback."""
    gw = start_gateway([auth.url], [dispatch.url])
    folder = tmp_path / "tamper"
    folder.mkdir()
    attacker = make_root(tmp_path / "attacker")
    online = make_root(tmp_path / "attacker-online")  # any key: the attacker's own signer
    (folder / "attacker.json").write_text(json.dumps({
        "root_public_key": b64url(public_raw(attacker.public_key())),
        "command_keyset": sign_keyset(attacker, [online.public_key()], 99, 30)}))
    (folder / "mode").write_text("swap-root")
    port = free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "tests.integration.tamper_proxy", "--port", str(port),
                              "--upstream", gw.url, "--dir", str(folder)], cwd=ROOT)
    wait_until(lambda: _up(f"http://127.0.0.1:{port}"), 20, what="the tampering proxy")
    yield f"http://127.0.0.1:{port}", gw
    proxy.kill()
    proxy.wait()


def _up(url: str) -> bool:
    try:
        return HTTP.get(url + "/healthz", timeout=1).status_code == 200
    except Exception:
        return False


def test_a_root_key_swapped_on_the_way_is_refused_and_nothing_runs(swapping_proxy, auth, tmp_path, key_dir, sql):
    url, gw = swapping_proxy
    token = create_registration_token(auth.url)["token"]
    state = tmp_path / "target"
    agent = AgentProcess(url, state, "m-target", token, extra_args=["--root-key-sha256", _fingerprint(key_dir)])
    assert agent.proc.wait(30) == 1
    assert "does not match --root-key-sha256" in agent.log()
    assert "root_key_pinned" not in agent.log()
    assert not (state / "state.json").exists()  # pinned nothing, kept no credentials
    agent_id = sql.execute("SELECT id::text FROM agents").fetchone()[0]
    cmd = HTTP.post(f"{gw.url}/api/v1/admin/commands", headers=ADMIN,
                    json={"agent_id": agent_id, "type": "shell", "params": {"argv": ["true"]}}).json()
    assert HTTP.get(f"{gw.url}/api/v1/admin/commands/{cmd['id']}", headers=ADMIN).json()["status"] == "pending"
    assert sql.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0


def test_an_agent_whose_machine_is_enrolled_waits_for_an_operator_and_recovers_by_itself(
        start_service, start_gateway, tmp_path, sql):
    """A thief's copy of the refresh token kills the family; the agent, refused 409 when it
    registers again (the machine is enrolled and was used), says what the operator must do
    and waits. Revoked, and handed a new token through its token file, it enrols again."""
    auth = start_service("services.auth", FLEETLINE_ACCESS_TOKEN_TTL_S="65")
    # Short polls every second: the agent looks at its token's expiry before each one, and
    # renews 5 s after it was issued (its token lives 65 s; renewal starts 60 s before).
    dispatch = start_service("services.dispatch", FLEETLINE_JWKS_URL=f"{auth.url}/.well-known/jwks.json",
                             FLEETLINE_ACCESS_TOKEN_TTL_S="65", FLEETLINE_POLL_INTERVAL_S="1")
    gw = start_gateway([auth.url], [dispatch.url])
    token_file = tmp_path / "registration-token"
    token_file.write_text(create_registration_token(auth.url)["token"])
    state = tmp_path / "victim"
    agent = AgentProcess(gw.url, state, "m-victim", None,
                         extra_args=["--registration-token-file", str(token_file), "--no-long-poll"])
    try:
        agent.wait_log("agent_started")
        first = json.loads((state / "state.json").read_text())
        # The thief renews a copy twice: its successor is used, so the agent's next renewal
        # is a reuse (whether or not the agent renewed once before the thief did).
        stolen = first["refresh_token"]
        for _ in range(2):
            stolen = HTTP.post(f"{gw.url}/api/v1/agents/renew", headers={"X-Machine-ID": "m-victim"},
                               json={"agent_id": first["agent_id"], "refresh_token": stolen}).json()["refresh_token"]
        agent.wait_log("registration_conflict", timeout=60)
        assert "refresh_token_reused" in agent.log() and "waiting_for_operator" in agent.log()
        assert f"enrolled_agent_id={first['agent_id']}" in agent.log()
        assert agent.proc.poll() is None
        # The operator revokes the old agent and gives a new token (the old one is used up).
        assert HTTP.delete(f"{gw.url}/api/v1/admin/agents/{first['agent_id']}", headers=ADMIN).status_code == 204
        token_file.write_text(create_registration_token(auth.url)["token"])
        agent.wait_log("registration_token_changed", timeout=10)
        wait_until(lambda: _agent_id(state) not in (None, first["agent_id"]), 15, 0.1, "the agent to enrol again")
        assert _queue_and_wait(gw.url, _agent_id(state))["status"] == "succeeded"
        assert sql.execute("SELECT count(*) FROM agents WHERE machine_id = 'm-victim' AND status = 'active'"
                           ).fetchone()[0] == 1
    finally:
        agent.stop()
