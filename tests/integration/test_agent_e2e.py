"""The agent end to end: real auth, dispatch and gateway processes and a real agent process."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from fleetline.cli.keys import ACCESS_TOKEN_KEY
from fleetline.cli.pgembed import free_port
from tests.integration.agentproc import AgentProcess
from tests.integration.conftest import ADMIN_TOKEN, FAST, create_registration_token
from tests.integration.support import HTTP, ROOT, ServiceProcess, wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


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
    # The agent's own record names who issued what it ran, as the signature vouches.
    started = [line for line in agent.log().splitlines() if "command_started" in line and cmd["id"] in line]
    assert len(started) == 1 and "issued_by=bootstrap" in started[0]
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
    once = fleet_stack.queue(agent_id, "shell", ack_timeout_s=1,
                             params={"argv": ["sh", "-c", f"echo run >> {marker}"]})
    # The agent's previous life: it polled with its own credentials, journaled the command
    # as received and was SIGKILLed before its ack, so the 1 s lease runs out unacked.
    state = json.loads((tmp_path / "a1" / "state.json").read_text())
    first = HTTP.get(f"{fleet_stack.url}/api/v1/agents/{agent_id}/commands",
                      headers={"Authorization": f"Bearer {state['access_token']}", "X-Machine-ID": "machine-a1"})
    assert [c["id"] for c in first.json()["commands"]] == [once["id"]]
    with sqlite3.connect(tmp_path / "a1" / "journal.sqlite3") as db:
        db.execute("INSERT INTO commands (id, type, status, updated_at) VALUES (?, 'shell', 'received', 0)",
                   (once["id"],))
    fleet_stack.agent()
    done = fleet_stack.wait_status(once["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    # Final: never delivered again. Two deliveries, one execution.
    assert done["delivery_count"] == 2 and done["retry_count"] == 1
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

    signer = Signer.from_file(str(key_dir / ACCESS_TOKEN_KEY), "fleetline-auth", "fleetline", -3600)
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
    assert HTTP.delete(f"{fleet_stack.url}/api/v1/admin/agents/{agent_id}", headers=ADMIN).status_code == 204
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
    """Its credentials were never used (it was stopped before its first poll): registering
    again is a retry, and it stays the same agent."""
    token = create_registration_token(fleet_stack.url, max_uses=1)
    agent_id = fleet_stack.enrol(token=token["token"])
    _plant_expired_access_token(tmp_path / "a1", key_dir, agent_id, refresh_token="flref_no-longer-valid")
    cmd = fleet_stack.queue(agent_id, "ping")
    agent = fleet_stack.agent(token=token["token"])
    fleet_stack.wait_status(cmd["id"], {"succeeded"})
    log = agent.log().split("agent_started")[-1]
    assert "refresh_refused" in log and f"agent_registered agent_id={agent_id}" in log
    tokens = HTTP.get(f"{fleet_stack.url}/api/v1/admin/registration-tokens", headers=ADMIN).json()["tokens"]
    assert [t["uses"] for t in tokens if t["id"] == token["id"]] == [1]  # same machine: no new use


def test_a_refused_refresh_token_never_enrols_a_used_machine_again(fleet_stack, tmp_path, key_dir, sql):
    """Once it has polled, registering its machine again is refused (409): it waits for an
    operator instead of taking a new identity, and nothing runs meanwhile."""
    token = create_registration_token(fleet_stack.url, max_uses=1)
    agent_id = fleet_stack.enrol(token=token["token"])
    state = json.loads((tmp_path / "a1" / "state.json").read_text())
    assert HTTP.get(f"{fleet_stack.url}/api/v1/agents/{agent_id}/commands",
                    headers={"Authorization": f"Bearer {state['access_token']}",
                             "X-Machine-ID": "machine-a1"}).status_code == 200
    _plant_expired_access_token(tmp_path / "a1", key_dir, agent_id, refresh_token="flref_no-longer-valid")
    cmd = fleet_stack.queue(agent_id, "ping")
    agent = fleet_stack.agent(token=token["token"])
    agent.wait_log("waiting_for_operator")
    log = agent.log().split("agent_started")[-1]
    assert "refresh_refused" in log and "registration_conflict" in log and f"enrolled_agent_id={agent_id}" in log
    assert agent.proc.poll() is None
    assert fleet_stack.command(cmd["id"])["status"] == "pending"
    tokens = HTTP.get(f"{fleet_stack.url}/api/v1/admin/registration-tokens", headers=ADMIN).json()["tokens"]
    assert [t["uses"] for t in tokens if t["id"] == token["id"]] == [1]
    assert sql.execute("SELECT count(*) FROM agents").fetchone()[0] == 1


# --- every command received ends with a result; nothing of the agent leaks into it -------

def test_output_over_64_kib_with_nul_and_a_timeout_note_is_still_accepted(fleet_stack):
    fleet_stack.agent()
    agent_id = fleet_stack.agent_id()
    cmd = fleet_stack.queue(agent_id, "shell", params={
        "argv": ["sh", "-c", "head -c 100000 /dev/zero; printf 'tail-end'; sleep 30"], "timeout_s": 1})
    done = fleet_stack.wait_status(cmd["id"], {"succeeded", "failed"}, timeout=30)
    output = done["result"]["output"]
    assert done["status"] == "failed" and "\x00" not in output
    assert len(output.encode()) <= 64 * 1024
    assert output.endswith("tail-end\n[timeout: killed after 1 s]")


def test_a_short_ack_timeout_behind_a_long_command_still_runs(fleet_stack):
    agent_id = fleet_stack.enrol()
    slow = fleet_stack.queue(agent_id, "sleep", params={"seconds": 5}, priority=10)
    quick = fleet_stack.queue(agent_id, "ping", ack_timeout_s=2, max_retries=0)
    fleet_stack.agent()
    assert fleet_stack.wait_status(quick["id"], {"succeeded", "failed", "timed_out"})["status"] == "succeeded"
    assert fleet_stack.wait_status(slow["id"], {"succeeded", "failed"})["status"] == "succeeded"


def test_max_parallel_bounds_what_is_claimed_and_run_at_once(fleet_stack, tmp_path):
    agent_id = fleet_stack.enrol()
    ids = [fleet_stack.queue(agent_id, "sleep", params={"seconds": 2})["id"] for _ in range(5)]
    fleet_stack.agent(extra_args=["--max-parallel", "2"])
    running_max = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # one listing is one statement: a consistent sample
        listed = HTTP.get(f"{fleet_stack.url}/api/v1/admin/commands", params={"agent_id": agent_id},
                           headers=ADMIN).json()["commands"]
        states = [c["status"] for c in listed]
        running_max = max(running_max, sum(s in ("sent", "running") for s in states))
        if states.count("succeeded") == len(ids):
            break
        time.sleep(0.1)
    assert all(fleet_stack.command(i)["status"] == "succeeded" for i in ids)
    assert running_max == 2


def _pids_running(pattern: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and pattern in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_a_background_child_neither_stalls_the_result_nor_outlives_the_command(fleet_stack):
    fleet_stack.agent()
    agent_id = fleet_stack.agent_id()
    cmd = fleet_stack.queue(agent_id, "shell", params={"argv": ["sh", "-c", "(sleep 47.25 &); echo started"]})
    done = fleet_stack.wait_status(cmd["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["result"]["output"] == "started\n"
    started = datetime.fromisoformat(done["result"]["started_at"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(done["result"]["finished_at"].replace("Z", "+00:00"))
    assert (finished - started).total_seconds() < 3  # no 5 s stall waiting on the pipe
    assert _pids_running("sleep 47.25") == []


def _seconds(result: dict) -> float:
    started = datetime.fromisoformat(result["started_at"].replace("Z", "+00:00"))
    return (datetime.fromisoformat(result["finished_at"].replace("Z", "+00:00")) - started).total_seconds()


def test_a_command_that_leaves_a_daemon_behind_reports_within_4s(fleet_stack):
    """The field's `service x start`: the daemon leaves the command's process group (setsid)
    and keeps the output pipe open. The command still ends when its main process does: what
    was printed, and what a child printed within a second after, is in the result, the
    group is ended, and the daemon (no longer the command's) runs on."""
    fleet_stack.agent()
    agent_id = fleet_stack.agent_id()
    script = "(setsid sleep 52.5 &); (sleep 0.3; echo late) & sleep 0.1; echo started; (sleep 48.5 &)"
    queued = time.monotonic()
    cmd = fleet_stack.queue(agent_id, "shell", params={"argv": ["sh", "-c", script]})
    done = fleet_stack.wait_status(cmd["id"], {"succeeded", "failed"}, timeout=30)
    try:
        assert time.monotonic() - queued < 4, done
        assert done["status"] == "succeeded" and done["result"]["output"] == "started\nlate\n", done
        assert _seconds(done["result"]) < 2.5
        assert _pids_running("sleep 48.5") == []  # in the command's group: ended with it
        assert len(_pids_running("sleep 52.5")) == 1  # the daemon is not the command's any more
    finally:
        for pid in _pids_running("sleep 52.5"):
            os.kill(pid, signal.SIGKILL)


def test_commands_run_in_a_clean_environment(fleet_stack, tmp_path):
    token = create_registration_token(fleet_stack.url)["token"]
    fleet_stack.agent(token=token)
    agent_id = fleet_stack.agent_id()
    cmd = fleet_stack.queue(agent_id, "shell", params={"argv": ["env"], "env": {"EXTRA": "yes"}})
    output = fleet_stack.wait_status(cmd["id"], {"succeeded"})["result"]["output"]
    names = {line.split("=", 1)[0] for line in output.splitlines() if "=" in line}
    assert {"PATH", "HOME", "LANG", "EXTRA"} <= names
    assert not any(n.startswith("FLEETLINE") for n in names) and token not in output


def test_the_state_directory_and_journal_are_private(fleet_stack, tmp_path):
    state = tmp_path / "a1"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    fleet_stack.agent().wait_log("agent_started")
    assert state.stat().st_mode & 0o777 == 0o700
    for name in ("state.json", "journal.sqlite3", "machine-id"):
        if (state / name).exists():
            assert (state / name).stat().st_mode & 0o777 == 0o600, name


def test_the_registration_token_cannot_be_given_in_argv(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "agent", "--server", "http://127.0.0.1:9",
                           "--state-dir", str(tmp_path / "s"), "--registration-token", "flreg_secret"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--registration-token" in proc.stderr


def test_malformed_or_oversized_poll_answers_are_retried_never_fatal(tmp_path):
    port = free_port()
    stub = subprocess.Popen([sys.executable, "-m", "tests.integration.upstream_stub", "--port", str(port),
                             "--mode", "garbage"], cwd=ROOT)
    try:
        wait_until(lambda: _listening(port), 15, what="stub")
        agent = AgentProcess(f"http://127.0.0.1:{port}", tmp_path / "g", "m-g", token="flreg_x")
        agent.wait_log("malformed poll answer", timeout=30)
        assert agent.proc.poll() is None and "Traceback" not in agent.log()
        agent.stop()
    finally:
        stub.kill()
        stub.wait()


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


# --- refresh-token rotation, seen from the agent ----------------------------------------

def test_the_agent_saves_each_new_refresh_token_before_using_it(fleet_stack, tmp_path, key_dir):
    agent_id = fleet_stack.enrol()
    before = json.loads((tmp_path / "a1" / "state.json").read_text())["refresh_token"]
    _plant_expired_access_token(tmp_path / "a1", key_dir, agent_id)
    cmd = fleet_stack.queue(agent_id, "ping")
    agent = fleet_stack.agent()
    fleet_stack.wait_status(cmd["id"], {"succeeded"})
    assert "token_renewed" in agent.log()
    state = tmp_path / "a1" / "state.json"
    assert json.loads(state.read_text())["refresh_token"] != before
    assert state.stat().st_mode & 0o777 == 0o600


def test_a_stolen_refresh_token_is_detected_at_the_real_agents_next_renewal(fleet_stack, tmp_path, key_dir):
    token = create_registration_token(fleet_stack.url, max_uses=1)["token"]
    agent_id = fleet_stack.enrol(token=token)
    stolen = json.loads((tmp_path / "a1" / "state.json").read_text())["refresh_token"]

    def renew(refresh):
        return HTTP.post(f"{fleet_stack.url}/api/v1/agents/renew", headers={"X-Machine-ID": "machine-a1"},
                          json={"agent_id": agent_id, "refresh_token": refresh})

    # The thief renews with the copy, and again with what it got: the agent's token is now
    # a consumed one whose successor was used.
    thiefs = renew(renew(stolen).json()["refresh_token"]).json()["refresh_token"]
    _plant_expired_access_token(tmp_path / "a1", key_dir, agent_id)
    agent = fleet_stack.agent(token=token)
    agent.wait_log("registration_conflict")
    log = agent.log().split("agent_started")[-1]
    assert "refresh_token_reused" in log and "waiting_for_operator" in log
    auth_log = fleet_stack.services["auth"].log()
    assert "refresh_token_reused" in auth_log and "registration_refused" in auth_log
    # The family is dead for the thief too.
    assert renew(thiefs).json()["error"] == "token_reused"


# --- signed commands, seen from the agent --------------------------------------------------

def test_a_database_side_change_of_a_queued_command_is_never_run(fleet_stack, sql, tmp_path):
    marker = tmp_path / "ran.txt"
    agent_id = fleet_stack.enrol()
    cmd = fleet_stack.queue(agent_id, "shell", params={"argv": ["sh", "-c", f"echo signed >> {marker}"]})
    sql.execute("UPDATE commands SET params = %s, type = 'shell' WHERE id = %s",
                (json.dumps({"argv": ["sh", "-c", f"echo tampered >> {marker}"]}), cmd["id"]))
    fleet_stack.agent()
    done = fleet_stack.wait_status(cmd["id"], {"succeeded", "failed", "rejected"})
    assert done["status"] == "succeeded"
    assert marker.read_text().splitlines() == ["signed"]


def test_another_agents_signed_command_replayed_here_is_rejected_and_never_run(fleet_stack, sql, tmp_path):
    marker = tmp_path / "ran.txt"
    mine = fleet_stack.enrol("a1")
    theirs = fleet_stack.enrol("a2")
    decoy = fleet_stack.queue(mine, "ping")
    foreign = fleet_stack.queue(theirs, "shell", params={"argv": ["sh", "-c", f"echo ran >> {marker}"]})
    # Whoever writes the database copies a real signature onto this agent's command.
    sql.execute("UPDATE commands SET signed = (SELECT signed FROM commands WHERE id = %s), type = 'shell', "
                "params = (SELECT params FROM commands WHERE id = %s) WHERE id = %s",
                (foreign["id"], foreign["id"], decoy["id"]))
    agent = fleet_stack.agent("a1")
    done = fleet_stack.wait_status(decoy["id"], {"succeeded", "failed", "rejected"})
    assert done["status"] == "rejected" and "another" in done["result"]["output"]
    assert done["acked_at"] is None and not marker.exists()
    assert "command_rejected" in agent.log()
