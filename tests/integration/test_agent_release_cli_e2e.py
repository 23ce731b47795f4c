"""The agent's releases from the command line, end to end: the one-line install `fleetline
tokens create` prints, run on a machine with only Python 3.9; `fleetline agents upgrade`
with a canary; and `fleetline up --agent-release`'s demo fleet moved by an upgrade job and
left on its version by a broken release."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.integration.releases import (
    BROKEN,
    NEW,
    OLD,
    PLATFORM,
    fleetline_cli,
    listed_version,
    machine,
    ping_version,
    python,
    release_builds,
)
from tests.integration.support import HTTP, ROOT, stop_process, wait_until


@pytest.fixture(scope="module")
def builds():
    return release_builds()


@pytest.fixture
def stack(fleet_stack):
    return fleet_stack


def test_the_one_line_install_from_tokens_create_enrols_a_machine_with_only_python_3_9(stack, builds, tmp_path):
    assert fleetline_cli("releases", "upload", str(builds[OLD]), "--url", stack.url).returncode == 0
    listed = json.loads(fleetline_cli("releases", "list", "--url", stack.url, "--json").stdout)["releases"]
    assert [(r["version"], r["platform"]) for r in listed] == [(OLD, PLATFORM)]
    created = fleetline_cli("tokens", "create", "--url", stack.url)
    assert created.returncode == 0, created.stderr
    assert f"as root on a {PLATFORM} machine with Python 3.9" in created.stdout
    line = json.loads(fleetline_cli("tokens", "create", "--url", stack.url, "--json").stdout)["install_commands"][PLATFORM]
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
        assert fleetline_cli("releases", "upload", str(builds[version]), "--url", stack.url).returncode == 0
    machines = [machine(stack, builds, tmp_path, f"c{i}") for i in range(3)]
    try:
        ids = [m.agent_id() for m in machines]
        for agent_id in ids:
            assert ping_version(stack, agent_id) == OLD
        done = fleetline_cli("agents", "upgrade", "--version", NEW, "--all-active", "--canary", "1", "--max-in-flight", "1",
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
