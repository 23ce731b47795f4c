"""A real agent behind a tampering network: only commands signed for it by a key its
pinned root vouches for ever run, and exactly as signed; anything else ends `rejected`
and runs nothing."""

import json
import subprocess
import sys

import httpx
import pytest

from fleetline.cli.keys import (
    ACCESS_TOKEN_KEY,
    ONLINE_KEY,
    ROOT_KEY,
    ROOT_PUB,
    public_key_of,
)
from fleetline.cli.pgembed import free_port
from fleetline.signing import load_private, sign_keyset
from tests.integration.agentproc import AgentProcess
from tests.integration.conftest import ADMIN_TOKEN, create_registration_token
from tests.integration.support import HTTP, ROOT, wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def hostile(start_service, start_gateway, tmp_path, key_dir):
    auth = start_service("services.auth")
    dispatch = start_service("services.dispatch", FLEETLINE_JWKS_URL=f"{auth.url}/.well-known/jwks.json")
    gw = start_gateway([auth.url], [dispatch.url])
    folder = tmp_path / "tamper"
    folder.mkdir()
    port = free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "tests.integration.tamper_proxy", "--port", str(port),
                              "--upstream", gw.url, "--dir", str(folder)], cwd=ROOT)
    wait_until(lambda: _up(f"http://127.0.0.1:{port}"), 20, what="the tampering proxy")
    agents = []

    class World:
        url, direct, dispatch_url = f"http://127.0.0.1:{port}", gw.url, dispatch.url
        jwks_url = f"{auth.url}/.well-known/jwks.json"

        def stop_dispatch(self) -> None:
            dispatch.stop()

        def modes(self, text: str) -> None:
            (folder / "mode").write_text(text)

        def write(self, name: str, document: dict) -> None:
            (folder / name).write_text(json.dumps(document))

        def agent(self) -> tuple[AgentProcess, str]:
            token = create_registration_token(gw.url)["token"]
            a = AgentProcess(self.url, tmp_path / "a1", "machine-a1", token,
                             extra_args=["--root-key-file", str(key_dir / ROOT_PUB)])
            agents.append(a)
            a.wait_log("agent_started")
            agent_id = json.loads((tmp_path / "a1" / "state.json").read_text())["agent_id"]
            return a, agent_id

        def queue(self, agent_id, **fields) -> dict:
            r = HTTP.post(f"{gw.url}/api/v1/admin/commands", headers=ADMIN, json={"agent_id": agent_id, **fields})
            assert r.status_code == 201, r.text
            return r.json()

        def final(self, cid) -> dict:
            return wait_until(lambda: (c := HTTP.get(f"{gw.url}/api/v1/admin/commands/{cid}", headers=ADMIN)
                                       .json())["status"] not in ("pending", "sent", "running") and c,
                              30, 0.1, "the command to end")

    yield World()
    for a in agents:
        a.stop()
    proxy.kill()
    proxy.wait()


def _up(url):
    try:
        HTTP.get(url + "/healthz", timeout=1)
        return True
    except httpx.HTTPError:
        return False


def _shell(marker) -> dict:
    return {"type": "shell", "params": {"argv": ["sh", "-c", f"echo signed-ok >> {marker}"]}}


def test_only_what_was_signed_for_this_agent_ever_runs(hostile, tmp_path):
    """One agent behind the proxy meets each tampering in turn (one set-up for all)."""
    agent, agent_id = hostile.agent()

    # A rewritten unsigned copy: the signed command runs, exactly as signed.
    marker = tmp_path / "signed-ran"
    hostile.modes("unsigned")
    done = hostile.final(hostile.queue(agent_id, **_shell(marker))["id"])
    assert done["status"] == "succeeded" and marker.read_text() == "signed-ok\n"
    assert "tampered" not in done["result"]["output"]

    # Another agent's real signature put on this agent's command.
    other_token = create_registration_token(hostile.direct)["token"]
    other = HTTP.post(f"{hostile.direct}/api/v1/agents/register",
                       json={"registration_token": other_token, "machine_id": "m-other", "hostname": "h"}).json()
    hostile.queue(other["agent_id"], **_shell(tmp_path / "other"))
    theirs = HTTP.get(f"{hostile.direct}/api/v1/agents/{other['agent_id']}/commands",
                       headers={"Authorization": f"Bearer {other['access_token']}", "X-Machine-ID": "m-other"}
                       ).json()["commands"][0]
    hostile.write("replay.json", theirs["signed"])
    stranger = load_private(str(_stranger_root(tmp_path)))
    hostile.write("keyset.json", sign_keyset(stranger, [stranger.public_key()], 99, 30))

    for modes, reason in [("payload", "does not verify"), ("unknown-kid", "not in keyset"),
                          ("unknown-kid foreign-keyset", "not in keyset"), ("replay", "another")]:
        marker = tmp_path / f"ran-{modes.replace(' ', '-')}"
        hostile.modes(modes)
        seen = agent.log().count("command_rejected")
        done = hostile.final(hostile.queue(agent_id, **_shell(marker))["id"])
        assert done["status"] == "rejected" and done["acked_at"] is None, (modes, done)
        assert reason in done["result"]["output"], (modes, done["result"]["output"])
        assert not marker.exists(), modes
        wait_until(lambda seen=seen: agent.log().count("command_rejected") > seen, 10, what="the rejection logged")
    assert "keyset_refused" in agent.log()  # the foreign keyset was not taken


def test_an_older_keyset_is_refused(hostile, tmp_path, key_dir):
    root, online = load_private(str(key_dir / ROOT_KEY)), public_key_of(str(key_dir / ONLINE_KEY))
    put = HTTP.put(f"{hostile.direct}/api/v1/admin/command-keyset", headers=ADMIN, json=sign_keyset(root, [online], 2, 30))
    assert put.status_code == 200
    agent, agent_id = hostile.agent()  # registers with version 2
    hostile.write("keyset.json", sign_keyset(root, [online, public_key_of(str(key_dir / ACCESS_TOKEN_KEY))], 1, 30))
    hostile.modes("unknown-kid old-keyset")
    done = hostile.final(hostile.queue(agent_id, **_shell(tmp_path / "ran"))["id"])
    assert done["status"] == "rejected" and not (tmp_path / "ran").exists()
    assert "not above" in agent.log()


def _stranger_root(tmp_path):
    from fleetline.cli.keys import make_root

    make_root(tmp_path / "stranger")
    return tmp_path / "stranger" / ROOT_KEY


def test_rotating_the_online_key_under_a_running_agent_rejects_nothing(hostile, tmp_path, key_dir, base_env):
    from fleetline.private_files import new_ed25519_key
    from tests.integration.support import ServiceProcess

    agent, agent_id = hostile.agent()
    before = hostile.final(hostile.queue(agent_id, type="ping")["id"])
    assert before["status"] == "succeeded"
    # 1. A new online key joins the keyset (version 2, both keys).
    root, old = load_private(str(key_dir / ROOT_KEY)), public_key_of(str(key_dir / ONLINE_KEY))
    new_key = tmp_path / "online-2.key"
    new_ed25519_key(new_key)
    v2 = sign_keyset(root, [old, public_key_of(str(new_key))], 2, 30)
    assert HTTP.put(f"{hostile.direct}/api/v1/admin/command-keyset", headers=ADMIN, json=v2).status_code == 200
    # 2. Dispatch restarts signing with it, on the same address.
    port = int(hostile.dispatch_url.rsplit(":", 1)[1])
    hostile.stop_dispatch()
    env = {**base_env, "FLEETLINE_COMMAND_SIGNING_KEY_FILE": str(new_key),
           "FLEETLINE_JWKS_URL": hostile.jwks_url}
    replacement = ServiceProcess("services.dispatch", env, tmp_path, port=port).wait_ready()
    try:
        # 3. The agent meets the new kid, fetches the keyset once, and runs the command.
        after = [hostile.final(hostile.queue(agent_id, type="ping")["id"]) for _ in range(3)]
        assert [c["status"] for c in after] == ["succeeded"] * 3
        assert "keyset_accepted version=2" in agent.log() and "command_rejected" not in agent.log()
    finally:
        replacement.stop()


def test_forged_unsigned_or_replayed_cancels_stop_nothing(hostile, tmp_path):
    """A network that can add cancels to poll answers cannot stop a command: an unsigned
    cancel, one signed by a stranger's key, and another agent's genuine cancel put on this
    agent's command are each refused, and the command runs to its end."""
    from fleetline.signing import COMMAND_CONTEXT, key_id, sign

    agent, agent_id = hostile.agent()
    marker = tmp_path / "finished"
    cmd = hostile.queue(agent_id, type="shell",
                        params={"argv": ["sh", "-c", f"sleep 4; echo finished > {marker}; echo finished"]})
    # Another agent's real cancel, taken straight from dispatch (no proxy in between).
    other_token = create_registration_token(hostile.direct)["token"]
    other = HTTP.post(f"{hostile.direct}/api/v1/agents/register",
                       json={"registration_token": other_token, "machine_id": "m-other", "hostname": "h"}).json()
    theirs = hostile.queue(other["agent_id"], type="ping")
    as_other = {"Authorization": f"Bearer {other['access_token']}", "X-Machine-ID": "m-other"}
    base = f"{hostile.direct}/api/v1/agents/{other['agent_id']}/commands"
    assert HTTP.get(base, headers=as_other).json()["commands"]
    assert HTTP.post(f"{base}/{theirs['id']}/ack", headers=as_other).json()["status"] == "running"
    assert HTTP.post(f"{hostile.direct}/api/v1/admin/commands/{theirs['id']}/cancel", headers=ADMIN).status_code == 202
    genuine = HTTP.get(base, params={"cancels_only": "true"}, headers=as_other).json()["cancels"][0]
    stranger = load_private(str(_stranger_root(tmp_path)))
    forged = {"v": 1, "aud": "fleetline-agent", "cancel": cmd["id"], "agent_id": agent_id,
              "issued_by": "mallory", "iat": "2026-12-07T00:00:00Z"}
    hostile.write("cancels.json", [
        {"command_id": cmd["id"]},
        {"command_id": cmd["id"], "signed": {"kid": key_id(stranger.public_key()),
                                              **sign(stranger, COMMAND_CONTEXT, forged)}},
        {"command_id": cmd["id"], "signed": genuine["signed"]},
    ])
    wait_until(lambda: HTTP.get(f"{hostile.direct}/api/v1/admin/commands/{cmd['id']}", headers=ADMIN)
               .json()["status"] == "running", 30, 0.1, "the command to run")
    hostile.modes("forge-cancels")
    hostile.queue(agent_id, type="ping")  # a poll answer, to carry the forged cancels
    wait_until(lambda: agent.log().count("cancel_rejected") >= 3, 20, 0.1, "the forged cancels refused")
    done = hostile.final(cmd["id"])
    assert done["status"] == "succeeded" and marker.read_text() == "finished\n", done
    log = agent.log()
    assert "not signed" in log and "not in keyset" in log and "another agent" in log
    assert "cancel_received" not in log
