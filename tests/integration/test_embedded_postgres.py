"""The embedded PostgreSQL: no local user reaches it without its password, it listens only
on 127.0.0.1, it dies with whoever started it, and it changes no permission of a directory
Fleetline did not create."""

import os
import stat
import subprocess
import sys

import psycopg
import pytest

from fleetline.cli.pgembed import EmbeddedPostgres, postgres_bin


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def pg(tmp_path):
    private_parent = tmp_path / "private"
    private_parent.mkdir(mode=0o700)
    private_parent.chmod(0o700)
    server = EmbeddedPostgres(private_parent / "fleet" / "postgres")
    watched = [private_parent, tmp_path, *list(postgres_bin().parents)[:6]]
    before = {p: _mode(p) for p in watched}
    server.start()
    yield server, before
    server.destroy()


def test_no_password_or_a_wrong_one_is_refused(pg):
    server, _ = pg
    assert psycopg.connect(server.url).execute("SELECT 1").fetchone() == (1,)
    for url in (f"postgresql://postgres@127.0.0.1:{server.port}/postgres",
                f"postgresql://postgres:wrong@127.0.0.1:{server.port}/postgres"):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=5)
    assert _mode(server.password_file) == 0o600


def test_it_listens_on_loopback_only_and_keeps_its_files_private(pg):
    server, _ = pg
    with psycopg.connect(server.url) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('listen_addresses', 'unix_socket_directories', 'password_encryption')").fetchall())
        hba = conn.execute("SELECT type, address, auth_method FROM pg_hba_file_rules").fetchall()
    assert settings == {"listen_addresses": "127.0.0.1", "unix_socket_directories": "",
                        "password_encryption": "scram-sha-256"}
    assert hba == [("host", "127.0.0.1", "scram-sha-256")]
    assert _mode(server.cluster) == 0o700


def test_its_log_is_private_and_never_holds_the_services_password_verifier(pg, tmp_path):
    """PostgreSQL logs a failed statement whole: the service role's SCRAM verifier was in a
    world-readable server.log (migrate's CREATE ROLE failed on a role made before)."""
    from fleetline.cli.migrate import ensure_service_login, migrate

    server, _ = pg
    migrate(server.url)
    for password in ("first-password-0123", "second-password-4567"):  # made, then re-passworded
        ensure_service_login(server.url, password)
    log = server.data_dir / "server.log"
    assert _mode(log) == 0o600
    assert "SCRAM-SHA-256$" not in log.read_text()
    # A log left readable by an earlier version is made private at the next start.
    server.stop()
    log.chmod(0o644)
    server.start()
    assert _mode(log) == 0o600


def test_no_permission_changes_outside_what_fleetline_created(pg):
    _, before = pg
    assert {p: _mode(p) for p in before} == before


def test_it_dies_with_the_process_that_started_it(tmp_path):
    script = ("import sys, time; from pathlib import Path; from fleetline.cli.pgembed import EmbeddedPostgres;"
              "pg = EmbeddedPostgres(Path(sys.argv[1])); pg.start(); print(pg.proc.pid, flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "pg")], stdout=subprocess.PIPE, text=True)
    pid = int(holder.stdout.readline())
    holder.kill()
    holder.wait()
    from tests.integration.support import wait_until

    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
               15, what="postgres to die with its parent")
    EmbeddedPostgres(tmp_path / "pg").destroy()
