"""The yoyo chain applies, rolls back and re-applies; concurrent runs are safe."""

import os
import subprocess
import sys

import psycopg

from fleetline.schema import expected_versions
from tests.integration.support import ROOT
from tests.realdb import with_database


def _tables(url):
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                            "AND tablename NOT LIKE '\\_yoyo%%' AND tablename NOT LIKE 'yoyo%%'").fetchall()
    return {r[0] for r in rows}


def test_apply_rollback_reapply(pg_server_url):
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE fl_migrate_chain")
    url = with_database(pg_server_url, "fl_migrate_chain")
    try:
        from fleetline.cli.migrate import migrate

        assert migrate(url) == len(expected_versions())
        assert _tables(url) == {"registration_tokens", "agents", "refresh_token_families", "refresh_tokens",
                                "commands", "deliveries", "command_keysets", "jobs", "operators",
                                "operator_tokens", "operator_sessions", "audit_events", "approval_policy",
                                "command_output", "job_targets", "audit_retention", "oidc_nonces", "schedules",
                                "schedule_runs", "agent_releases", "webhook_endpoints", "webhook_deliveries"}
        assert migrate(url) == 0  # twice is a no-op
        assert migrate(url, rollback=True) == len(expected_versions())
        assert _tables(url) == set()
        assert migrate(url) == len(expected_versions())
        assert "commands" in _tables(url)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE fl_migrate_chain WITH (FORCE)")


def test_three_concurrent_migrate_processes(pg_server_url):
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE fl_migrate_race")
    url = with_database(pg_server_url, "fl_migrate_race")
    try:
        # The URL (with its password) from the environment: never in argv. The audit horizon
        # from there too: migrate writes it, the only writer the services cannot be.
        env = {**os.environ, "FLEETLINE_DATABASE_URL": url, "FLEETLINE_AUDIT_RETENTION_DAYS": "90"}
        procs = [subprocess.Popen([sys.executable, "-m", "fleetline", "migrate"], env=env,
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for _ in range(3)]
        outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
        with psycopg.connect(url) as conn:
            applied = conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0]
        assert applied == len(expected_versions())
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT days FROM audit_retention").fetchall() == [(90.0,)]
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE fl_migrate_race WITH (FORCE)")


def test_the_services_role_reads_and_writes_rows_and_nothing_more(databases, database_url, auth, sql):
    with psycopg.connect(databases.service_url(database_url), autocommit=True) as service:
        assert service.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                               "WHERE rolname = current_user").fetchone() == (False, False, False)
        assert service.execute("SELECT count(*) FROM agents").fetchone() == (0,)
        assert service.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0] == len(expected_versions())
        for ddl in ("CREATE TABLE stolen (x int)", "DROP TABLE agents", "ALTER TABLE agents ADD COLUMN x int",
                    "DELETE FROM _yoyo_migration", "TRUNCATE commands", "CREATE ROLE intruder SUPERUSER"):
            try:
                service.execute(ddl)
                raise AssertionError(f"the services' role could: {ddl}")
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.WrongObjectType):
                pass
    # And the services themselves connect as that role.
    users = {r[0] for r in sql.execute("SELECT usename FROM pg_stat_activity WHERE datname = current_database() "
                                       "AND application_name NOT LIKE 'psql%' AND pid <> pg_backend_pid()")}
    assert users == {"fleetline_app"}, users
