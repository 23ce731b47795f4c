"""An installed Fleetline (a built wheel in a fresh virtualenv, run from another
directory) migrates and serves: nothing it needs comes from the checkout."""

import json
import os
import signal
import subprocess
import sys


from tests.integration.launch import read_ready_line
from tests.integration.support import HTTP, ROOT


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
        assert page.status_code == 200 and "admin_token" in page.text
        assert HTTP.get(f"{gw}/console/static/console.js").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
