"""The agent end to end: real auth, dispatch and gateway processes and a real agent process."""

import json
import re
import sqlite3
import time

import httpx
import pytest

from tests.integration.agentproc import AgentProcess
from tests.integration.conftest import ADMIN_TOKEN, create_registration_token
from tests.integration.support import ServiceProcess, wait_until

FAST = {"FLEETLINE_POLL_INTERVAL_S": "1", "FLEETLINE_RAPID_POLL_INTERVAL_S": "1",
        "FLEETLINE_REAPER_INTERVAL_S": "0.5"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def fleet_stack(start_service, start_gateway, tmp_path):
    auth = start_service("services.auth", **FAST)
    dispatch = start_service("services.dispatch", FLEETLINE_JWKS_URL=f"{auth.url}/.well-known/jwks.json", **FAST)
    gw = start_gateway([auth.url], [dispatch.url])
    agents: list[AgentProcess] = []

    class Stack:
        url = gw.url
        services = {"auth": auth, "dispatch": dispatch, "gateway": gw}

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
            r = httpx.post(f"{gw.url}/api/v1/admin/commands", headers=ADMIN,
                           json={"agent_id": agent_id, "type": ctype, **fields})
            assert r.status_code == 201, r.text
            return r.json()

        def command(self, cid) -> dict:
            return httpx.get(f"{gw.url}/api/v1/admin/commands/{cid}", headers=ADMIN).json()

        def wait_status(self, cid, statuses, timeout=30) -> dict:
            return wait_until(lambda: (c := self.command(cid))["status"] in statuses and c, timeout, 0.1,
                              f"command {cid} to reach {statuses}")

    yield Stack()
    for a in agents:
        a.stop()


def _executions(state_dir, cid) -> int:
    with sqlite3.connect(state_dir / "journal.sqlite3") as db:
        row = db.execute("SELECT executions FROM commands WHERE id = ?", (cid,)).fetchone()
    return row[0] if row else 0


def test_ping_result_is_visible_to_the_operator(fleet_stack, tmp_path):
    agent = fleet_stack.agent()
    agent_id = fleet_stack.agent_id()
    assert (tmp_path / "a1" / "state.json").stat().st_mode & 0o777 == 0o600
    cmd = fleet_stack.queue(agent_id, "ping")
    done = fleet_stack.wait_status(cmd["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert json.loads(done["result"]["output"])["agent_version"] == "1.0.0"
    unknown = fleet_stack.queue(agent_id, "reboot-everything")
    failed = fleet_stack.wait_status(unknown["id"], {"succeeded", "failed"})
    assert failed["status"] == "failed" and "unknown command type" in failed["result"]["output"]
    assert agent.proc.poll() is None  # an unknown type does not stop the agent
    facts = fleet_stack.wait_status(fleet_stack.queue(agent_id, "facts")["id"], {"succeeded"})
    assert json.loads(facts["result"]["output"])["cpu_count"] >= 1


def test_sigkill_during_a_command_reports_interrupted_and_never_reruns(fleet_stack, tmp_path):
    agent = fleet_stack.agent()
    agent_id = fleet_stack.agent_id()
    cmd = fleet_stack.queue(agent_id, "sleep", params={"seconds": 60})
    fleet_stack.wait_status(cmd["id"], {"running"})
    agent.wait_log("command_started")
    agent.kill()
    restarted = fleet_stack.agent()
    done = fleet_stack.wait_status(cmd["id"], {"failed"})
    assert done["result"]["output"] == "interrupted"
    restarted.wait_log("command_interrupted")
    assert _executions(tmp_path / "a1", cmd["id"]) == 1
    assert done["delivery_count"] == 1


def test_a_redelivered_command_runs_exactly_once(fleet_stack, tmp_path):
    marker = tmp_path / "executions.txt"
    agent_id = fleet_stack.enrol()
    # One poll hands over both (queued while the agent is down): it starts the long one
    # first and dies in it, so the shell command's ack never happens and its 1 s lease runs out.
    blocker = fleet_stack.queue(agent_id, "sleep", params={"seconds": 60}, priority=10)
    once = fleet_stack.queue(agent_id, "shell", ack_timeout_s=1,
                             params={"argv": ["sh", "-c", f"echo run >> {marker}"]})
    agent = fleet_stack.agent()
    fleet_stack.wait_status(blocker["id"], {"running"})
    assert fleet_stack.command(once["id"])["status"] == "sent"
    agent.kill()
    fleet_stack.agent()
    done = fleet_stack.wait_status(once["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert done["delivery_count"] == 2 and done["retry_count"] == 1
    time.sleep(1.5)  # keep polling a while: it must not come back (lease checks are in seconds)
    assert marker.read_text().splitlines() == ["run"]
    assert _executions(tmp_path / "a1", once["id"]) == 1


def test_a_command_the_journal_knows_is_not_run_again_its_result_is_resent(fleet_stack, tmp_path):
    marker = tmp_path / "executions.txt"
    agent_id = fleet_stack.enrol()
    cmd = fleet_stack.queue(agent_id, "shell", params={"argv": ["sh", "-c", f"echo run >> {marker}"]})
    stored = {"status": "succeeded", "exit_code": 0, "output": "from the journal",
              "started_at": "2026-11-27T10:00:00Z", "finished_at": "2026-11-27T10:00:01Z"}
    with sqlite3.connect(tmp_path / "a1" / "journal.sqlite3") as db:
        db.execute("INSERT INTO commands (id, type, status, result, reported, executions, updated_at) "
                   "VALUES (?, 'shell', 'done', ?, 1, 1, 0)", (cmd["id"], json.dumps(stored)))
    fleet_stack.agent()
    done = fleet_stack.wait_status(cmd["id"], {"succeeded", "failed"})
    assert done["result"]["output"] == "from the journal"
    assert not marker.exists()


def _plant_expired_access_token(state_dir, key_dir, agent_id, **more) -> None:
    """An access token long past its expiry (and its leeway), while the state file claims it
    is good for years: the agent learns otherwise only from the server's 401."""
    from services.auth.keys import Signer

    signer = Signer.from_file(str(key_dir / "signing.pem"), "fleetline-auth", "fleetline", -3600)
    expired, _ = signer.access_token(agent_id, "machine-a1")
    state = json.loads((state_dir / "state.json").read_text())
    state.update(access_token=expired, access_token_expires_at="2099-01-01T00:00:00Z", **more)
    (state_dir / "state.json").write_text(json.dumps(state))


def test_an_expired_access_token_is_renewed_without_losing_the_poll(fleet_stack, tmp_path, key_dir):
    agent_id = fleet_stack.enrol()
    _plant_expired_access_token(tmp_path / "a1", key_dir, agent_id)
    cmd = fleet_stack.queue(agent_id, "ping")
    agent = fleet_stack.agent()
    fleet_stack.wait_status(cmd["id"], {"succeeded"})
    log = agent.log().split("agent_started")[-1]
    assert "token_renewed" in log and "server_unavailable" not in log


def test_a_revoked_agent_exits_non_zero_with_one_clear_line(fleet_stack):
    agent = fleet_stack.agent()
    agent_id = fleet_stack.agent_id()
    agent.wait_log("agent_started")
    assert httpx.delete(f"{fleet_stack.url}/api/v1/admin/agents/{agent_id}", headers=ADMIN).status_code == 204
    assert agent.proc.wait(30) == 1
    errors = [line for line in agent.log().splitlines() if line.startswith("[ERROR]")]
    assert len(errors) == 1 and "revoked" in errors[0]
    assert "Traceback" not in agent.log()


def test_sigterm_during_a_backoff_ends_the_agent_within_a_second(tmp_path):
    agent = AgentProcess("http://127.0.0.1:9", tmp_path / "lonely", "m-lonely", token="flreg_x")
    agent.wait_log("server_unavailable")
    t0 = time.monotonic()
    agent.proc.send_signal(15)
    agent.proc.wait(5)
    assert time.monotonic() - t0 < 1.0


ETHOS_RETRY = re.compile(r"^\[WARNING\] \[agent\] \[polling\] server_unavailable attempt=(\d+) next_retry_in=(\d+)s")


def test_the_agent_recovers_by_itself_after_the_server_was_down(fleet_stack, base_env, tmp_path):
    agent = fleet_stack.agent()
    agent_id = fleet_stack.agent_id()
    agent.wait_log("agent_started")
    dispatch = fleet_stack.services["dispatch"]
    dispatch.stop()
    agent.wait_log("server_unavailable", timeout=30)
    back = ServiceProcess("services.dispatch", {**base_env, **FAST,
                          "FLEETLINE_JWKS_URL": f"{fleet_stack.services['auth'].url}/.well-known/jwks.json"},
                          tmp_path, port=dispatch.port).wait_ready()
    try:
        cmd = fleet_stack.queue(agent_id, "ping")
        fleet_stack.wait_status(cmd["id"], {"succeeded"}, timeout=60)
    finally:
        back.stop()
    retries = [ETHOS_RETRY.match(line) for line in agent.log().splitlines() if "server_unavailable" in line]
    assert retries and all(retries)
    assert all(10 <= int(m.group(2)) <= 300 for m in retries)
    assert agent.proc.poll() is None


@pytest.mark.parametrize("seconds,expected", [(2, "succeeded"), (60, "failed")])
def test_sigterm_gives_a_running_command_a_short_grace(fleet_stack, seconds, expected):
    agent = fleet_stack.agent()
    agent_id = fleet_stack.agent_id()
    cmd = fleet_stack.queue(agent_id, "sleep", params={"seconds": seconds})
    fleet_stack.wait_status(cmd["id"], {"running"})
    agent.wait_log("command_started")
    t0 = time.monotonic()
    agent.proc.send_signal(15)
    assert agent.proc.wait(15) == 0
    assert time.monotonic() - t0 < 8  # never longer than the grace (5 s) and a report
    done = fleet_stack.command(cmd["id"])
    assert done["status"] == expected
    if expected == "failed":
        assert done["result"]["output"] == "interrupted"


def test_a_refused_refresh_token_leads_to_registering_again_as_the_same_agent(fleet_stack, tmp_path, key_dir):
    token = create_registration_token(fleet_stack.url, max_uses=1)
    agent_id = fleet_stack.enrol(token=token["token"])
    _plant_expired_access_token(tmp_path / "a1", key_dir, agent_id, refresh_token="flref_no-longer-valid")
    cmd = fleet_stack.queue(agent_id, "ping")
    agent = fleet_stack.agent(token=token["token"])
    fleet_stack.wait_status(cmd["id"], {"succeeded"})
    log = agent.log().split("agent_started")[-1]
    assert "refresh_refused" in log and f"agent_registered agent_id={agent_id}" in log
    tokens = httpx.get(f"{fleet_stack.url}/api/v1/admin/registration-tokens", headers=ADMIN).json()["tokens"]
    assert [t["uses"] for t in tokens if t["id"] == token["id"]] == [1]  # same machine: no new use
