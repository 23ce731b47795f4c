"""The agent as one file, and upgrades from the server (docs/api.md, agent releases): real
.pyz files built with pex, installed by their own `install` on Python 3.9 and 3.13, run
by the launcher; upgrades as jobs through the gateway; releases tampered with, broken on
purpose, and agents killed in the middle."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from typing import Iterator

import psutil
import pytest

from tests.integration.conftest import ADMIN_TOKEN, create_registration_token
from tests.integration.releases import PLATFORM, Installed, build_all, python
from tests.integration.support import HTTP, ROOT, stop_process, wait_until

OLD, NEW, BROKEN = "7.1.0", "7.2.0", "7.3.0"


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("dist"), {OLD: False, NEW: False, BROKEN: True})


def upload(stack, version: str, path, platform: str = PLATFORM) -> dict:
    r = stack.api("POST", f"/agent-releases?version={version}&platform={platform}",
                  {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/octet-stream"},
                  content=path.read_bytes())
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def stack(fleet_stack):
    return fleet_stack


def machine(stack, builds, tmp_path, name: str, py: str = "3.9", version: str = OLD) -> Installed:
    inst = Installed(builds[version], tmp_path / name, py)
    return inst.start(stack.url, f"machine-{name}", create_registration_token(stack.url)["token"])


@contextlib.contextmanager
def answering_on_old(m: Installed, stack) -> Iterator[tuple[Installed, str]]:
    """An installed machine enrolled and answering on the old release; stopped after."""
    try:
        agent_id = m.agent_id()
        assert ping_version(stack, agent_id) == OLD
        yield m, agent_id
    finally:
        m.stop()


def ping_version(stack, agent_id: str) -> str:
    cmd = stack.queue(agent_id, "ping")
    done = stack.wait_status(cmd["id"], {"succeeded", "failed", "timed_out"}, timeout=60)
    assert done["status"] == "succeeded", done
    return json.loads(done["result"]["output"])["agent_version"]


def upgrade(stack, agent_id: str, version: str, **params) -> dict:
    cmd = stack.queue(agent_id, "agent.upgrade", params={"version": version, **params})
    return stack.wait_status(cmd["id"], {"succeeded", "failed", "timed_out", "rejected"}, timeout=90)


def listed_version(stack, agent_id: str) -> str:
    return stack.api("GET", f"/agents/{agent_id}").json()["agent_version"]


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


def _cli(*args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}
    return subprocess.run([sys.executable, "-m", "fleetline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**clean, "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN})


def test_the_one_line_install_from_tokens_create_enrols_a_machine_with_only_python_3_9(stack, builds, tmp_path):
    assert _cli("releases", "upload", str(builds[OLD]), "--url", stack.url).returncode == 0
    listed = json.loads(_cli("releases", "list", "--url", stack.url, "--json").stdout)["releases"]
    assert [(r["version"], r["platform"]) for r in listed] == [(OLD, PLATFORM)]
    created = _cli("tokens", "create", "--url", stack.url)
    assert created.returncode == 0, created.stderr
    assert f"as root on a {PLATFORM} machine with Python 3.9" in created.stdout
    line = json.loads(_cli("tokens", "create", "--url", stack.url, "--json").stdout)["install_commands"][PLATFORM]
    # This machine is not to be changed: the same line, into a prefix and unit directory of
    # the test's, with the unit written but not started (systemd does not run here).
    prefix, units = tmp_path / "opt", tmp_path / "units"
    assert line.count(" install --systemd ") == 1
    line = line.replace(" install --systemd ", f" install --prefix {prefix} --systemd --unit-dir {units} --no-start ")
    only_39 = tmp_path / "bin"
    only_39.mkdir()
    (only_39 / "python3").symlink_to(python("3.9"))
    done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=120,
                          env={"PATH": f"{only_39}:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": OK" in done.stdout  # sha256sum checked the download
    assert os.readlink(prefix / "current") == f"releases/{OLD}"
    assert (prefix / "registration-token").stat().st_mode & 0o777 == 0o600
    unit = (units / "fleetline-agent.service").read_text()
    verified = subprocess.run(["systemd-analyze", "verify", str(units / "fleetline-agent.service")],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    assert "registration-token" in unit and "FLEETLINE_AGENT_REGISTRATION_TOKEN" not in unit
    exec_start = shlex.split(unit.split("ExecStart=", 1)[1].splitlines()[0])
    assert exec_start[0] == str(prefix / "bin" / "fleetline-agent")
    shebang = open(exec_start[0]).readline().strip()[2:]  # the Python that installed it runs it
    assert os.path.realpath(shebang) == os.path.realpath(python("3.9"))
    state = exec_start.index("--state-dir")
    exec_start[state + 1] = str(tmp_path / "state")
    launcher = subprocess.Popen(exec_start, env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
                                stdout=(tmp_path / "agent.log").open("ab"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (tmp_path / "state" / "state.json").exists(), 60, 0.1, "the agent to enrol")
        agent_id = json.loads((tmp_path / "state" / "state.json").read_text())["agent_id"]
        assert ping_version(stack, agent_id) == OLD
    finally:
        stop_process(launcher, timeout=30)


def test_agents_upgrade_from_the_cli_with_a_canary(stack, builds, tmp_path):
    for version in (OLD, NEW):
        assert _cli("releases", "upload", str(builds[version]), "--url", stack.url).returncode == 0
    machines = [machine(stack, builds, tmp_path, f"c{i}") for i in range(3)]
    try:
        ids = [m.agent_id() for m in machines]
        for agent_id in ids:
            assert ping_version(stack, agent_id) == OLD
        done = _cli("agents", "upgrade", "--version", NEW, "--all-active", "--canary", "1", "--max-in-flight", "1",
                    "--max-failures", "0", "--wait", "--timeout", "300", "--url", stack.url)
        assert done.returncode == 0, done.stdout + done.stderr
        jobs = stack.api("GET", "/jobs").json()["jobs"]
        assert jobs[0]["rollout"]["canary"] == 1 and jobs[0]["status"] == "completed"
        upgrades = sorted((stack.command(t["command_id"]) for t in
                           stack.api("GET", f"/jobs/{jobs[0]['id']}/targets").json()["targets"]),
                          key=lambda c: c["sent_at"])
        canary, rest = upgrades[0], upgrades[1:]
        # Nothing else was delivered before the canary had succeeded.
        assert canary["status"] == "succeeded" and len(rest) == 2
        assert all(c["sent_at"] >= canary["finished_at"] for c in rest), upgrades
        for agent_id in ids:
            assert listed_version(stack, agent_id) == NEW
    finally:
        for m in machines:
            m.stop()


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


def test_an_upgrade_job_moves_the_demo_fleet_and_a_broken_release_leaves_it_on_the_old(builds, tmp_path):
    """`fleetline up --agents 2 --agent-release OLD.pyz`: demo agents installed from the file
    and run by its launcher, as on managed machines; an upgrade job from the CLI moves them
    to NEW, one to BROKEN fails on both and leaves both answering on NEW."""
    from tests.integration.launch import read_ready_line, stop_launcher

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETLINE_", "PEX"))}
    proc = subprocess.Popen([sys.executable, "-m", "fleetline", "up", "--data-dir", str(tmp_path / "fleet"),
                             "--port", "0", "--agents", "2", "--agent-release", str(builds[OLD])],
                            cwd=ROOT, env={**clean, "FLEETLINE_POLL_INTERVAL_S": "2"}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        url = read_ready_line(proc)["gateway"]
        admin = {"Authorization": f"Bearer {(tmp_path / 'fleet' / 'admin-token').read_text().strip()}"}

        def agents() -> list[dict]:
            r = HTTP.get(f"{url}/api/v1/admin/agents", headers=admin)
            assert r.status_code == 200, r.text
            return r.json()["agents"]

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "fleetline", *args, "--url", url, "--data-dir",
                                   str(tmp_path / "fleet")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                                  env=clean)

        wait_until(lambda: len([a for a in agents() if a["last_seen_at"]]) == 2, 90, 0.2, "two demo agents")
        assert {a["agent_version"] for a in agents()} == {OLD}
        for version in (NEW, BROKEN):
            assert cli("releases", "upload", str(builds[version])).returncode == 0
        moved = cli("agents", "upgrade", "--version", NEW, "--all-active", "--max-in-flight", "1", "--wait")
        assert moved.returncode == 0, moved.stdout + moved.stderr
        assert {a["agent_version"] for a in agents()} == {NEW}
        broken = cli("agents", "upgrade", "--version", BROKEN, "--all-active", "--upgrade-timeout", "15", "--wait")
        assert broken.returncode != 0  # every target failed: rolled back
        assert {a["agent_version"] for a in agents()} == {NEW}
        for a in agents():
            cmd = HTTP.post(f"{url}/api/v1/admin/commands", headers=admin,
                            json={"agent_id": a["id"], "type": "ping"}).json()
            done = wait_until(lambda c=cmd: (s := HTTP.get(f"{url}/api/v1/admin/commands/{c['id']}",
                                                          headers=admin).json())["status"] == "succeeded" and s,
                              60, 0.2, "a ping")
            assert json.loads(done["result"]["output"])["agent_version"] == NEW
    finally:
        stop_launcher(proc)
