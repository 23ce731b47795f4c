"""Schema migrations with yoyo: applied or rolled back under yoyo's lock, so running
`fleetline migrate` twice, or from several processes at once, is safe."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from yoyo import get_backend, read_migrations

from fleetline.schema import migrations_dir
from fleetline.settings import postgres_url


def migrate(database_url: str, rollback: bool = False, lock_timeout_s: int = 60,
            audit_retention_days: float | None = None) -> int:
    """Apply every pending migration (or roll all back); returns how many ran. With
    `audit_retention_days`, the audit horizon is set too: only the schema's owner writes it,
    so no service can move it (migration 0013)."""
    backend = get_backend(postgres_url(database_url, "postgresql+psycopg"))
    try:
        with migrations_dir() as path, backend.lock(timeout=lock_timeout_s):
            migrations = read_migrations(str(path))
            if rollback:
                todo = backend.to_rollback(migrations)
                backend.rollback_migrations(todo)
            else:
                todo = backend.to_apply(migrations)
                backend.apply_migrations(todo)
    finally:
        backend.connection.close()
    if audit_retention_days is not None and not rollback:
        with psycopg.connect(postgres_url(database_url, "postgresql"), autocommit=True) as conn:
            conn.execute("UPDATE audit_retention SET days = %s", (audit_retention_days,))
    return len(todo)


def break_stale_lock(database_url: str) -> None:
    """For an operator whose migrate process died holding yoyo's lock."""
    backend = get_backend(postgres_url(database_url, "postgresql+psycopg"))
    try:
        backend.break_lock()
    finally:
        backend.connection.close()


# The login role the services connect as: a member of fleetline_service (migration 0007),
# which may read and write rows and nothing more.
SERVICE_LOGIN = "fleetline_app"


def ensure_service_login(database_url: str, password: str) -> None:
    """Create (or re-password) the services' login role. The password is hashed here with
    libpq's SCRAM-SHA-256 (PQencryptPasswordConn): the server, its logs and its statistics
    never see it in plain text. Whether the role exists is asked first, under a lock two
    migrates share, so the statement carrying the verifier never fails (PostgreSQL logs a
    failed statement whole, verifier included)."""
    with psycopg.connect(postgres_url(database_url, "postgresql"), autocommit=True) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), SERVICE_LOGIN.encode(),
                                                b"scram-sha-256").decode()
        role = sql.Identifier(SERVICE_LOGIN)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('fleetline.service_login'))")
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SERVICE_LOGIN,)).fetchone()
            statement = ("ALTER ROLE {} LOGIN PASSWORD {}" if exists else
                         "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}")
            conn.execute(sql.SQL(statement).format(role, sql.Literal(verifier)))
        conn.execute(sql.SQL("GRANT fleetline_service TO {}").format(role))


def database_url_as(database_url: str, user: str, password: str) -> str:
    """The same database, reached as another role."""
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))
