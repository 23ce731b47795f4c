"""`fleetline up` end to end, driven by the operator CLI; nothing survives its stop."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.launch import read_ready_line
from tests.integration.support import HTTP, ROOT, wait_until

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cli(data_dir: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetline", *args, "--url", url, "--data-dir", str(data_dir)],
                          cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def launched(tmp_path):
    data_dir = tmp_path / "fleet"
    proc = subprocess.Popen([sys.executable, "-m", "fleetline", "up", "--data-dir", str(data_dir),
                             "--port", "0", "--dispatch-replicas", "2"],
                            cwd=ROOT, env=CLEAN_ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    fields = read_ready_line(proc)
    yield proc, data_dir, fields
    if proc.poll() is None:
        proc.kill()


def test_fleetline_up_runs_the_fleet_and_stops_everything(launched):
    proc, data_dir, fields = launched
    gw = fields["gateway"]
    assert len(fields["dispatch"].split(",")) == 2 and fields["auth"].startswith("http://127.0.0.1:")
    assert (data_dir / "admin-token").stat().st_mode & 0o777 == 0o600

    created = cli(data_dir, gw, "tokens", "create", "--max-uses", "1", "--json")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["token"]
    token_file = data_dir / "enroll-token"
    made = cli(data_dir, gw, "tokens", "create", "--token-file", str(token_file))
    assert made.returncode == 0, made.stderr
    assert token_file.stat().st_mode & 0o777 == 0o600
    secret = token_file.read_text().strip()
    assert secret.startswith("flreg_") and secret not in made.stdout
    reg = HTTP.post(f"{gw}/api/v1/agents/register",
                     json={"registration_token": token, "machine_id": "m-up", "hostname": "up-host"}).json()
    listed = cli(data_dir, gw, "agents", "list")
    assert "up-host" in listed.stdout and "HOSTNAME" in listed.stdout

    sent = cli(data_dir, gw, "commands", "send", "--agent", reg["agent_id"], "--type", "ping", "--json")
    assert sent.returncode == 0, sent.stderr
    cmd_id = json.loads(sent.stdout)["id"]
    polled = HTTP.get(f"{gw}/api/v1/agents/{reg['agent_id']}/commands",
                       headers={"Authorization": f"Bearer {reg['access_token']}", "X-Machine-ID": "m-up"}).json()
    assert [c["id"] for c in polled["commands"]] == [cmd_id]
    shown = cli(data_dir, gw, "commands", "show", cmd_id)
    assert "sent" in shown.stdout

    refused = cli(data_dir, gw, "agents", "show", "00000000-0000-0000-0000-000000000000")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "not_found" in refused.stderr and "Traceback" not in refused.stderr
    cancelled = cli(data_dir, gw, "commands", "send", "--agent", reg["agent_id"], "--type", "ping",
                    "--ttl", "1", "--wait", "--timeout", "30")
    assert cancelled.returncode == 1 and "expired" in cancelled.stdout

    launcher = psutil.Process(proc.pid)
    started = launcher.children(recursive=True)
    pg_pid = next(p.pid for p in launcher.children() if p.name() == "postgres")  # its child, not a daemon
    assert len(started) >= 4 and psutil.pid_exists(pg_pid)

    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert time.monotonic() - t0 < 10
    alive = [p.pid for p in started if _running(p.pid)]
    assert alive == []
    # The postmaster removes its pid file (pg_ctl's signal that it stopped) just before it
    # exits; give init a moment to reap it.
    wait_until(lambda: not _running(pg_pid), 5, what="postgres to exit")

    down = cli(data_dir, gw, "agents", "list")
    assert down.returncode == 1 and "cannot reach the gateway" in down.stderr and "Traceback" not in down.stderr


def test_demo_agents_answer_a_ping_from_the_cli(tmp_path):
    data_dir = tmp_path / "demo"
    env = {**CLEAN_ENV, "FLEETLINE_POLL_INTERVAL_S": "1", "FLEETLINE_RAPID_POLL_INTERVAL_S": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fleetline", "up", "--data-dir", str(data_dir),
                             "--port", "0", "--agents", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert "ready" in line, line
        gw = dict(p.split("=", 1) for p in line.split()[1:])["gateway"]

        def two_agents():
            out = cli(data_dir, gw, "agents", "list", "--json")
            return out.returncode == 0 and len(json.loads(out.stdout)["agents"]) == 2 and json.loads(out.stdout)

        agents = wait_until(two_agents, 60, 0.2, "two demo agents")["agents"]
        assert {a["machine_id"] for a in agents} == {"demo-machine-1", "demo-machine-2"}
        for demo in ("demo-1", "demo-2"):  # credentials and past outputs: the agent's alone
            state = data_dir / "agents" / demo
            assert state.stat().st_mode & 0o777 == 0o700
            assert (state / "state.json").stat().st_mode & 0o777 == 0o600
            assert (state / "journal.sqlite3").stat().st_mode & 0o777 == 0o600
        for a in agents:
            sent = cli(data_dir, gw, "commands", "send", "--agent", a["id"], "--type", "ping",
                       "--wait", "--timeout", "60")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert "succeeded" in sent.stdout
        # A job on the demo label, one agent at a time: progress on stderr, 0 when all succeeded.
        ran = cli(data_dir, gw, "jobs", "run", "--label", "env=demo", "--type", "ping",
                  "--max-in-flight", "1", "--wait", "--timeout", "60", "--json")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        job = json.loads(ran.stdout)
        assert job["status"] == "completed" and job["counts"]["succeeded"] == 2
        assert "] 2/2 completed  succeeded=2" in ran.stderr.splitlines()[-1]
        targets = cli(data_dir, gw, "jobs", "targets", job["id"])
        assert targets.returncode == 0 and targets.stdout.count("succeeded") == 2
        web = cli(data_dir, gw, "jobs", "run", "--label", "role=web", "--type", "ping", "--dry-run", "--json")
        assert json.loads(web.stdout)["target_count"] == 1 and len(json.loads(web.stdout)["targets"]) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_fifty_demo_agents_all_answer_a_ping_job_within_90_s_of_the_ready_line(tmp_path):
    """A small site started at once, at the default limits (it took 415 s when every
    registration counted against 10 a minute per address)."""
    data_dir = tmp_path / "fifty"
    env = {**CLEAN_ENV, "FLEETLINE_POLL_INTERVAL_S": "10"}  # as make up runs it
    proc = subprocess.Popen([sys.executable, "-m", "fleetline", "up", "--data-dir", str(data_dir),
                             "--port", "0", "--agents", "50"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        fields = read_ready_line(proc)
        ready = time.monotonic()
        gw, admin = fields["gateway"], {"Authorization": f"Bearer {(data_dir / 'admin-token').read_text().strip()}"}

        def enrolled() -> bool:
            return len(HTTP.get(f"{gw}/api/v1/admin/agents", headers=admin).json()["agents"]) == 50

        wait_until(enrolled, 90, 0.5, "50 demo agents enrolled")
        job = HTTP.post(f"{gw}/api/v1/admin/jobs", headers=admin,
                        json={"selector": {"labels": {"env": "demo"}}, "command": {"type": "ping"}}).json()
        assert job["target_count"] == 50
        left = 90 - (time.monotonic() - ready)
        done = wait_until(lambda: (j := HTTP.get(f"{gw}/api/v1/admin/jobs/{job['id']}", headers=admin).json())
                          ["status"] != "running" and j, max(left, 0.1), 0.5, "every demo agent to answer")
        assert done["counts"]["succeeded"] == 50, done["counts"]
        logs = "".join((data_dir / "logs" / f"agent-{i}.log").read_text() for i in range(1, 51))
        assert "server_unavailable" not in logs  # no agent was refused (429) or backed off
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_fleetline_up_on_a_network_address_serves_the_demo_fleet_over_https(tmp_path):
    """--host 0.0.0.0 implies --tls: a local CA, a gateway certificate for this machine's
    names, demo agents and the CLI verifying it."""
    data_dir = tmp_path / "tls"
    env = {**CLEAN_ENV, "FLEETLINE_POLL_INTERVAL_S": "1", "FLEETLINE_RAPID_POLL_INTERVAL_S": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fleetline", "up", "--data-dir", str(data_dir),
                             "--port", "0", "--agents", "2", "--host", "0.0.0.0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        fields = read_ready_line(proc)
        gw, ca_file = fields["gateway"], fields["ca_file"]
        assert gw.startswith("https://127.0.0.1:") and fields["console"] == f"{gw}/console/"
        assert (data_dir / "tls" / "gateway.key").stat().st_mode & 0o777 == 0o600
        with_ca = {**CLEAN_ENV, "FLEETLINE_CA_FILE": ca_file}

        def two_agents():
            out = subprocess.run([sys.executable, "-m", "fleetline", "agents", "list", "--json", "--url", gw,
                                  "--data-dir", str(data_dir)], cwd=ROOT, env=with_ca, capture_output=True,
                                 text=True, timeout=60)
            return out.returncode == 0 and len(json.loads(out.stdout)["agents"]) == 2 and json.loads(out.stdout)

        agents = wait_until(two_agents, 60, 0.2, "two demo agents over HTTPS")["agents"]
        sent = subprocess.run([sys.executable, "-m", "fleetline", "commands", "send", "--agent", agents[0]["id"],
                               "--type", "ping", "--wait", "--timeout", "60", "--url", gw, "--data-dir",
                               str(data_dir)], cwd=ROOT, env=with_ca, capture_output=True, text=True, timeout=90)
        assert sent.returncode == 0 and "succeeded" in sent.stdout, sent.stdout + sent.stderr
        for demo in ("agent-1", "agent-2"):
            log = (data_dir / "logs" / f"{demo}.log").read_text()
            assert "root_key_pinned source=verified_tls" in log
        # Reached from another machine by its network address, the certificate still fits.
        import psutil as ps

        lan = next(a.address for addrs in ps.net_if_addrs().values() for a in addrs
                   if a.family.name == "AF_INET" and not a.address.startswith("127."))
        import httpx

        from fleetline.transport import tls_context

        port = gw.rsplit(":", 1)[1]
        with httpx.Client(verify=tls_context(ca_file)) as client:
            assert client.get(f"https://{lan}:{port}/readyz").status_code == 200
        assert cli(data_dir, f"http://{lan}:{port}", "agents", "list").returncode == 1  # no plain HTTP
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
