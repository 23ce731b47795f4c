"""The operator CLI against a real gateway: secrets never in argv, nothing hostile printed
raw to a terminal, TLS verified, and every new registration token printed with the command
line that enrols a machine with it."""

import os
import subprocess
import sys
import uuid

from agent import trust
from fleetline.cli.keys import ROOT_PUB
from tests.integration.conftest import ADMIN_TOKEN, tls_env
from tests.integration.support import ROOT


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


def test_an_admin_manages_operators_and_each_acts_with_its_own_token(start_gateway, auth, dispatch, tmp_path, sql):
    gw = start_gateway([auth.url], [dispatch.url])
    admin = {"FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN, "FLEETLINE_URL": gw.url}
    password = "a long console password"
    added = fleetline("operators", "add", "vic", "--role", "viewer", "--label", "env=staging",
                      "--password-file", "-", env=admin, stdin=password + "\n")
    assert added.returncode == 0, added.stderr
    assert password not in added.stdout
    token_file = tmp_path / "vic-token"
    made = fleetline("operators", "token", "create", "vic", "--note", "laptop", "--token-file", str(token_file),
                     env=admin)
    assert made.returncode == 0 and token_file.stat().st_mode & 0o777 == 0o600
    secret = token_file.read_text().strip()
    assert secret.startswith("flop_") and secret not in made.stdout
    vic = {"FLEETLINE_TOKEN_FILE": str(token_file), "FLEETLINE_URL": gw.url}
    who = fleetline("whoami", env=vic)
    assert who.returncode == 0 and "vic" in who.stdout and "viewer" in who.stdout
    refused = fleetline("tokens", "create", env=vic)  # registration tokens: admins only
    assert refused.returncode == 1 and "forbidden" in refused.stderr and "HTTP 403" in refused.stderr
    listed = fleetline("operators", "token", "list", "me", env=vic)
    assert listed.returncode == 0 and "laptop" in listed.stdout and secret not in listed.stdout
    assert fleetline("operators", "update", "vic", "--disable", env=admin).returncode == 0
    assert sql.execute("SELECT count(*) FROM operator_tokens WHERE revoked_at IS NULL").fetchone()[0] == 0
    trail = fleetline("audit", "--actor", "vic", env=admin)
    assert trail.returncode == 0 and "registration_token.create" in trail.stdout and "forbidden" in trail.stdout
    creates = fleetline("audit", "--action", "operator.create", "--json", env=admin)
    assert password not in creates.stdout and '"vic"' in creates.stdout


def test_audit_follow_prints_each_new_event_as_it_lands(start_gateway, auth, dispatch):
    gw = start_gateway([auth.url], [dispatch.url])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")},
           "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN, "FLEETLINE_URL": gw.url}
    follow = subprocess.Popen([sys.executable, "-m", "fleetline", "audit", "--follow", "--action",
                               "registration_token.create"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        for note in ("first", "second"):
            done = fleetline("tokens", "create", "--note", note, env={"FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN,
                                                                      "FLEETLINE_URL": gw.url})
            assert done.returncode == 0, done.stderr
        lines = []
        while sum("registration_token.create" in line for line in lines) < 2:
            lines.append(follow.stdout.readline())  # a missing line would time the test out
        assert sum("bootstrap" in line for line in lines) == 2
    finally:
        follow.terminate()
        follow.wait(10)
