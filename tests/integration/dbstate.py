"""What the database shows: a fingerprint of every table, to prove that a refused request
changed nothing (`last_seen_at` is left out: dispatch writes it in the background, every
few seconds); and counts of statements on a table."""

from typing import Callable

TABLES = ("registration_tokens", "agents", "refresh_token_families", "refresh_tokens", "commands", "deliveries",
          "command_keysets", "jobs")


def snapshot(sql) -> dict:
    out = {}
    for table in TABLES:
        out[table] = sql.execute(
            f"SELECT count(*), md5(coalesce(string_agg((to_jsonb(t) - 'last_seen_at')::text, '|' "
            f"ORDER BY (to_jsonb(t) - 'last_seen_at')::text), '')) FROM {table} t"
        ).fetchone()
    return out


def count_statements(sql, event: str, table: str) -> Callable[[], int]:
    """From now on, count `event` (INSERT, UPDATE, ...) *statements* on `table`, not rows:
    a statement trigger sees each one at once, where pg_stat counters lag behind. Returns
    a function reading the count so far."""
    name = f"{event.lower()}_{table}_statements"
    sql.execute(f"""
        CREATE TABLE {name} (at timestamptz DEFAULT clock_timestamp());
        CREATE FUNCTION count_{name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO {name} DEFAULT VALUES; RETURN NULL; END $$;
        CREATE TRIGGER {name}_count AFTER {event} ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION count_{name}();""")
    return lambda: sql.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
