"""The operator CLI against a real gateway: secrets never in argv, nothing hostile printed
raw to a terminal, TLS verified, and every new registration token printed with the command
line that enrols a machine with it."""

import os
import subprocess
import sys
import uuid

from agent import trust
from tests.integration.conftest import ADMIN_TOKEN, tls_env
from tests.integration.support import ROOT
from fleetline.cli.keys import ROOT_PUB


def fleetline(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}
    return subprocess.run([sys.executable, "-m", "fleetline", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**clean, **(env or {})}, input=stdin)


def test_a_hostname_with_escape_sequences_is_printed_escaped(start_gateway, auth, dispatch, sql):
    # Written before the API refused control characters (or straight into the database).
    token_id = sql.execute("INSERT INTO registration_tokens (id, token_hash, max_uses, expires_at) "
                           "VALUES (gen_random_uuid(), '\\x00', 1, now() + interval '1 day') RETURNING id"
                           ).fetchone()[0]
    hostile = "web-01\x1b[2J\x1b[H\x1b]0;owned\x07FAKE ROW\u202e"
    agent_id = uuid.uuid4()
    sql.execute("INSERT INTO agents (id, machine_id, registration_token_id, hostname, labels) "
                "VALUES (%s, 'm-hostile', %s, %s, %s)",
                (agent_id, token_id, hostile, '{"env\\u001b[31m": "prod\\u0007"}'))
    gw = start_gateway([auth.url], [dispatch.url])
    env = {"FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN}
    for args in (["agents", "list", "--url", gw.url], ["agents", "show", str(agent_id), "--url", gw.url]):
        done = fleetline(*args, env=env)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert not any(c in out for c in "\x1b\x07\u202e"), repr(out)
        assert "web-01\\x1b[2J\\x1b[H\\x1b]0;owned\\x07FAKE ROW\\u202e" in out
    listing = fleetline("agents", "list", "--url", gw.url, env=env).stdout.splitlines()
    assert len(listing) == 2  # the header and one row: no forged line


def test_the_admin_token_is_read_from_a_file_or_the_environment_never_argv(start_gateway, auth, dispatch,
                                                                           tmp_path):
    gw = start_gateway([auth.url], [dispatch.url])
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    by_file = fleetline("agents", "list", "--url", gw.url, "--admin-token-file", str(token_file),
                        "--data-dir", str(tmp_path / "none"))
    assert by_file.returncode == 0, by_file.stderr
    by_env = fleetline("agents", "list", "--url", gw.url, "--data-dir", str(tmp_path / "none"),
                       env={"FLEETLINE_ADMIN_TOKEN_FILE": str(token_file)})
    assert by_env.returncode == 0, by_env.stderr
    in_argv = fleetline("agents", "list", "--url", gw.url, "--admin-token", ADMIN_TOKEN)
    assert in_argv.returncode == 2 and "unrecognized arguments" in in_argv.stderr
    migrate = fleetline("migrate", "--database-url", "postgresql://u:secret@h/db")
    assert migrate.returncode == 2 and "unrecognized arguments" in migrate.stderr


def test_the_cli_verifies_tls_and_sends_no_token_over_plain_http_to_a_remote_gateway(
        start_gateway, auth, dispatch, tls_dir):
    gw = start_gateway([auth.url], [dispatch.url], **tls_env(tls_dir))
    env = {"FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN}
    trusted = fleetline("agents", "list", "--url", gw.url, "--ca-file", str(tls_dir / "ca.pem"), env=env)
    assert trusted.returncode == 0, trusted.stderr
    by_env = fleetline("agents", "list", "--url", gw.url, env={**env, "FLEETLINE_CA_FILE": str(tls_dir / "ca.pem")})
    assert by_env.returncode == 0, by_env.stderr
    stranger = fleetline("agents", "list", "--url", gw.url, "--ca-file", str(tls_dir / "other" / "ca.pem"), env=env)
    assert stranger.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in stranger.stderr
    remote = fleetline("agents", "list", "--url", "http://fleet.example.com:8080", env=env)
    assert remote.returncode == 1 and "plain HTTP to a non-loopback address" in remote.stderr


def test_a_new_registration_token_comes_with_the_command_line_that_enrols_a_machine(
        start_gateway, auth, dispatch, tls_dir, key_dir, tmp_path):
    gw = start_gateway([auth.url], [dispatch.url], **tls_env(tls_dir))
    ca = str(tls_dir / "ca.pem")
    done = fleetline("tokens", "create", "--url", gw.url, "--ca-file", ca, "--token-file",
                     str(tmp_path / "token"), env={"FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN})
    assert done.returncode == 0, done.stderr
    fingerprint = trust.fingerprint((key_dir / ROOT_PUB).read_text())
    command = done.stdout.strip().splitlines()[-1].strip()
    assert command == (f"fleetline-agent --server {gw.url} --registration-token-file {tmp_path / 'token'} "
                       f"--root-key-sha256 {fingerprint} --ca-file {ca}")
    secret = (tmp_path / "token").read_text().strip()
    assert secret.startswith("flreg_") and secret not in done.stdout
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
