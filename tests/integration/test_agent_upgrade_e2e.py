"""The agent as one file, and upgrades from the server (docs/api.md, agent releases): real
.pyz files built with pex, installed by their own `install` on Python 3.9 and 3.13, run
by the launcher; upgrades through the gateway; releases tampered with, broken on purpose,
and agents killed in the middle. The command line's side (the one-line install, upgrade
jobs with a canary, the demo fleet) is test_agent_release_cli_e2e.py."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from tests.integration.conftest import create_registration_token
from tests.integration.releases import (
    BROKEN,
    NEW,
    OLD,
    Installed,
    answering_on_old,
    listed_version,
    machine,
    ping_version,
    release_builds,
    upgrade,
    upload,
)
from tests.integration.support import wait_until


@pytest.fixture(scope="module")
def builds():
    return release_builds()


@pytest.fixture
def stack(fleet_stack):
    return fleet_stack


def test_the_file_runs_on_python_3_9_and_3_13_enrols_and_answers_a_ping(stack, builds, tmp_path):
    machines = [machine(stack, builds, tmp_path, f"py{py}", py) for py in ("3.9", "3.13")]
    try:
        for m in machines:
            agent_id = m.agent_id()
            assert ping_version(stack, agent_id) == OLD
            assert listed_version(stack, agent_id) == OLD
            assert m.current() == f"releases/{OLD}"
            # Its wheels were unpacked inside the prefix, not in a home directory.
            assert (m.prefix / ".pex").is_dir()
        assert "3.9" in psutil.Process(machines[0].child().pid).exe() or "3.9" in " ".join(
            machines[0].child().cmdline())
    finally:
        for m in machines:
            m.stop()


def test_an_upgrade_job_moves_the_fleet_to_the_new_version_one_at_a_time(stack, builds, tmp_path):
    upload(stack, OLD, builds[OLD])
    upload(stack, NEW, builds[NEW])
    machines = [machine(stack, builds, tmp_path, f"m{i}", py) for i, py in enumerate(("3.9", "3.13"))]
    try:
        ids = [m.agent_id() for m in machines]
        for agent_id in ids:
            assert ping_version(stack, agent_id) == OLD
        r = stack.api("POST", "/jobs", json={
            "selector": {"agent_ids": ids}, "command": {"type": "agent.upgrade", "params": {"version": NEW}},
            "rollout": {"max_in_flight": 1, "max_failures": 0}})
        assert r.status_code == 201, r.text
        job = wait_until(lambda: (j := stack.api("GET", f"/jobs/{r.json()['id']}").json())["status"] != "running"
                         and j, 120, 0.2, "the upgrade job to end")
        assert job["status"] == "completed", job
        targets = stack.api("GET", f"/jobs/{job['id']}/targets").json()["targets"]
        assert {t["status"] for t in targets} == {"succeeded"}
        for m, agent_id in zip(machines, ids, strict=True):
            assert listed_version(stack, agent_id) == NEW
            assert ping_version(stack, agent_id) == NEW
            assert m.current() == f"releases/{NEW}"
            assert (m.prefix / "releases" / OLD).is_dir()  # beside, never over
            assert not (m.prefix / "upgrade.json").exists() or json.loads(
                (m.prefix / "upgrade.json").read_text())["state"] == "confirmed"
        outputs = [stack.command(t["command_id"])["result"]["output"] for t in targets]
        assert all(f"upgraded from {OLD} to {NEW}" in o for o in outputs), outputs
        # Going back needs saying so.
        refused = upgrade(stack, ids[0], OLD)
        assert refused["status"] == "failed" and "allow_downgrade" in refused["result"]["output"]
        back = upgrade(stack, ids[0], OLD, allow_downgrade=True)
        assert back["status"] == "succeeded", back
        assert ping_version(stack, ids[0]) == OLD
    finally:
        for m in machines:
            m.stop()


def test_a_tampered_release_is_refused_and_nothing_is_installed(stack, builds, tmp_path, sql):
    upload(stack, NEW, builds[NEW])
    with answering_on_old(machine(stack, builds, tmp_path, "t1"), stack) as (m, agent_id):
        # Changed after upload (the digest signed into the command is the upload's).
        sql.execute("UPDATE agent_releases SET content = overlay(content PLACING '\\x00'::bytea FROM 5000)")
        done = upgrade(stack, agent_id, NEW)
        assert done["status"] == "failed" and "SHA-256" in done["result"]["output"], done
        assert not (m.prefix / "releases" / NEW).exists()
        assert [p.name for p in (m.prefix / "releases").iterdir()] == [OLD]  # no staging left either
        assert m.current() == f"releases/{OLD}"
        assert ping_version(stack, agent_id) == OLD


@pytest.mark.parametrize("how", ["exit", "hang"])
def test_a_broken_release_is_rolled_back_and_the_agent_answers_on_the_old_one(stack, builds, tmp_path, how):
    upload(stack, BROKEN, builds[BROKEN])
    started = Installed(builds[OLD], tmp_path / "b1", "3.13").start(
        stack.url, "machine-b1", create_registration_token(stack.url)["token"], BROKEN_HOW=how)
    with answering_on_old(started, stack) as (m, agent_id):
        done = upgrade(stack, agent_id, BROKEN, upgrade_timeout_s=10)
        assert done["status"] == "failed", done
        reason = "did not complete a poll in time" if how == "hang" else "exited with 3"
        assert "rolled back" in done["result"]["output"] and reason in done["result"]["output"], done
        assert m.current() == f"releases/{OLD}"
        assert ping_version(stack, agent_id) == OLD
        assert listed_version(stack, agent_id) == OLD


@pytest.mark.parametrize("moment", ["downloading", "switched"])
def test_an_agent_killed_in_the_middle_of_an_upgrade_comes_back_on_one_version(stack, builds, tmp_path, moment):
    upload(stack, NEW, builds[NEW])
    with answering_on_old(machine(stack, builds, tmp_path, "k1"), stack) as (m, agent_id):
        agent = m.child()
        cmd = stack.queue(agent_id, "agent.upgrade", params={"version": NEW})
        releases = m.prefix / "releases"
        if moment == "downloading":
            seen = lambda: any(p.name.startswith(".staging-") for p in releases.iterdir())  # noqa: E731
        else:
            seen = (m.prefix / "upgrade.json").exists
        wait_until(seen, 60, 0.002, f"the upgrade to reach {moment}")
        os.kill(agent.pid, signal.SIGKILL)
        done = stack.wait_status(cmd["id"], {"succeeded", "failed"}, timeout=90)
        version = ping_version(stack, agent_id)
        assert m.current() == f"releases/{version}"  # one release in charge, and it answers
        assert (done["status"], version) in {("failed", OLD), ("succeeded", NEW)}, (done, version)
        if done["status"] == "failed":
            assert not (m.prefix / "upgrade.json").exists()


def test_an_agent_offline_during_the_rollout_upgrades_when_it_returns(stack, builds, tmp_path):
    upload(stack, NEW, builds[NEW])
    with answering_on_old(machine(stack, builds, tmp_path, "o1"), stack) as (m, agent_id):
        m.stop()
        cmd = stack.queue(agent_id, "agent.upgrade", params={"version": NEW})
        assert stack.command(cmd["id"])["status"] == "pending"
        m.start(stack.url, "machine-o1")
        done = stack.wait_status(cmd["id"], {"succeeded", "failed"}, timeout=90)
        assert done["status"] == "succeeded", done
        assert ping_version(stack, agent_id) == NEW


def test_an_upgrade_waits_for_the_commands_running_and_cuts_none_short(stack, builds, tmp_path):
    upload(stack, NEW, builds[NEW])
    with answering_on_old(machine(stack, builds, tmp_path, "w1"), stack) as (m, agent_id):
        busy = stack.queue(agent_id, "sleep", params={"seconds": 4})
        stack.wait_status(busy["id"], {"running"})
        done = upgrade(stack, agent_id, NEW)
        slept = stack.command(busy["id"])
        assert slept["status"] == "succeeded", slept  # not interrupted by the restart
        assert done["status"] == "succeeded" and done["finished_at"] >= slept["finished_at"], done
        assert ping_version(stack, agent_id) == NEW


