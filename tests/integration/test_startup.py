"""A service with a bad setting stops at once with one clear line, never a traceback."""

import subprocess
import sys

from tests.integration.support import ROOT


def test_service_refuses_to_start_with_one_clear_line():
    proc = subprocess.run([sys.executable, "-m", "services.auth", "--port", "1"], cwd=ROOT,
                          env={"FLEETLINE_POLL_INTERVAL_S": "soon", "PATH": "/usr/bin"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "FLEETLINE_POLL_INTERVAL_S" in proc.stderr and "Traceback" not in proc.stderr


def test_the_migrations_are_found_from_any_directory(tmp_path):
    # As `fleetline up` started elsewhere finds them (an editable install hides the
    # namespace package that carries them).
    env = {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", "from fleetline.schema import expected_versions as e; print(e())"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "0001.auth-schema" in proc.stdout and "0002.dispatch-schema" in proc.stdout


def test_dispatch_started_before_auth_accepts_tokens_as_soon_as_auth_answers(start_service, base_env, tmp_path):
    from tests.integration.fleet import Fleet
    from tests.integration.support import ServiceProcess, free_port

    auth_port = free_port()
    # Dispatch first: its JWKS fetch at start fails (nothing listens yet).
    dispatch = start_service("services.dispatch", FLEETLINE_JWKS_URL=f"http://127.0.0.1:{auth_port}/.well-known/jwks.json")
    auth = ServiceProcess("services.auth", base_env, tmp_path, port=auth_port).wait_ready()
    try:
        fleet = Fleet(auth.url, dispatch.url)
        agent = fleet.register()
        # At once, not after the 10 s between fetches meant for unknown kids.
        assert fleet.poll(agent)["commands"] == []
    finally:
        auth.stop()
