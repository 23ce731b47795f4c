"""A cancel reaches the agent (docs/api.md, cancelling a running command), with real agents
through the gateway: the running command's whole process group is gone within seconds,
children included, and it ends `cancelled` with its output so far; whether the agent's
slots are all busy or not; a command cancelled before its ack never starts; a job's
cancel stops every running command of it. What runs is read from /proc, not from the API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.conftest import ADMIN_TOKEN, create_registration_token, register
from tests.integration.support import HTTP, wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Prints its process group, then leaves a child behind it and waits: what a runaway job looks like.
RUNAWAY = {"argv": ["sh", "-c", 'echo "group $$"; sleep 600 & sleep 600; wait'], "timeout_s": 900}


def alive_in_group(pgid: int) -> list[int]:
    """Processes of the group that still run (a zombie waits only for its reaper)."""
    alive = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(proc.name))
    return alive


def output(url: str, command_id: str) -> str:
    return HTTP.get(f"{url}/api/v1/admin/commands/{command_id}/output", headers=ADMIN).json()["data"]


def group_of(url: str, command_id: str) -> int:
    """The process group a RUNAWAY command printed, once it printed it."""
    line = wait_until(lambda: next((ln for ln in output(url, command_id).splitlines() if ln.startswith("group ")),
                                   None), 30, 0.1, "the command to print its group")
    pgid = int(line.split()[1])
    # The shell prints before it forks: wait until it and both its sleeps run.
    wait_until(lambda: len(alive_in_group(pgid)) >= 3, 10, 0.01, "the shell and both its sleeps to run")
    return pgid


@pytest.mark.parametrize("max_parallel", ["1", "4"])  # 1: the last slot is busy; cancels still come
def test_a_cancelled_shell_command_and_its_children_are_gone_within_seconds(fleet_stack, max_parallel):
    fleet_stack.agent(extra_args=["--max-parallel", max_parallel])
    agent_id = fleet_stack.agent_id()
    cmd = fleet_stack.queue(agent_id, "shell", params=RUNAWAY)
    fleet_stack.wait_status(cmd["id"], {"running"})
    pgid = group_of(fleet_stack.url, cmd["id"])

    asked = time.monotonic()
    answer = fleet_stack.api("POST", f"/commands/{cmd['id']}/cancel")
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "running" and answer.json()["cancel_requested_at"]
    assert answer.json()["cancelled_by"]["name"]
    done = fleet_stack.wait_status(cmd["id"], {"cancelled", "succeeded", "failed", "timed_out"}, timeout=20)
    took = time.monotonic() - asked
    assert done["status"] == "cancelled", done
    assert f"group {pgid}" in done["result"]["output"] and "[cancelled" in done["result"]["output"]
    assert alive_in_group(pgid) == [], "a process of the cancelled command survived"
    assert took < 5, took
    assert fleet_stack.api("POST", f"/commands/{cmd['id']}/cancel").status_code == 409  # final


def test_a_command_cancelled_before_its_ack_is_never_started(fleet_stack, tmp_path):
    """As an agent would see it through the gateway: delivered, cancelled, then acked."""
    token = create_registration_token(fleet_stack.url)["token"]
    reg = register(fleet_stack.url, token, "machine-by-hand").json()
    headers = {"Authorization": f"Bearer {reg['access_token']}", "X-Machine-ID": "machine-by-hand"}
    marker = tmp_path / "ran"
    cmd = fleet_stack.queue(reg["agent_id"], "shell", params={"argv": ["touch", str(marker)]})
    polled = HTTP.get(f"{fleet_stack.url}/api/v1/agents/{reg['agent_id']}/commands", headers=headers).json()
    assert [c["id"] for c in polled["commands"]] == [cmd["id"]]
    cancel = fleet_stack.api("POST", f"/commands/{cmd['id']}/cancel")
    assert cancel.status_code == 202 and cancel.json()["status"] == "cancelled"
    ack = HTTP.post(f"{fleet_stack.url}/api/v1/agents/{reg['agent_id']}/commands/{cmd['id']}/ack", headers=headers)
    assert ack.status_code == 200 and ack.json()["status"] == "cancelled"  # the agent must not run it
    assert fleet_stack.command(cmd["id"])["acked_at"] is None


def test_a_job_of_20_running_commands_cancelled_leaves_no_process_behind(fleet_stack):
    names = [f"a{i}" for i in range(20)]
    for name in names:
        fleet_stack.agent(name)
    agent_ids = [fleet_stack.agent_id(name) for name in names]
    job = fleet_stack.api("POST", "/jobs", json={"selector": {"agent_ids": agent_ids},
                                                  "command": {"type": "shell", "params": RUNAWAY}}).json()
    wait_until(lambda: fleet_stack.api("GET", f"/jobs/{job['id']}").json()["counts"]["running"] == 20, 60, 0.2,
               "all 20 commands to run")
    targets = fleet_stack.api("GET", f"/jobs/{job['id']}/targets", params={"limit": 100}).json()["targets"]
    groups = [group_of(fleet_stack.url, t["command_id"]) for t in targets]
    assert len(set(groups)) == 20

    cancelled = fleet_stack.api("POST", f"/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_until(lambda: fleet_stack.api("GET", f"/jobs/{job['id']}").json()["counts"]["cancelled"] == 20, 30, 0.2,
               "every command of the job to end cancelled")
    assert [g for g in groups if alive_in_group(g)] == []
