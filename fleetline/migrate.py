"""Schema migrations with yoyo: applied or rolled back under yoyo's lock, so running
`fleetline migrate` twice, or from several processes at once, is safe."""

from __future__ import annotations

from yoyo import get_backend, read_migrations

from fleetline.schema import migrations_dir
from fleetline.settings import postgres_url


def migrate(database_url: str, rollback: bool = False, lock_timeout_s: int = 60) -> int:
    """Apply every pending migration (or roll all back); returns how many ran."""
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
        return len(todo)
    finally:
        backend.connection.close()


def break_stale_lock(database_url: str) -> None:
    """For an operator whose migrate process died holding yoyo's lock."""
    backend = get_backend(postgres_url(database_url, "postgresql+psycopg"))
    try:
        backend.break_lock()
    finally:
        backend.connection.close()
