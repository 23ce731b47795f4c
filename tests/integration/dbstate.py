"""What the database shows: a fingerprint of every table, to prove that a refused request
changed nothing (times written in the background are left out); the audit trail's size
(a refusal is recorded there, so it is counted apart); and counts of statements on a table."""

from typing import Callable

TABLES = ("registration_tokens", "agents", "refresh_token_families", "refresh_tokens", "commands", "deliveries",
          "command_keysets", "jobs", "operators", "operator_tokens", "operator_sessions", "command_output", "job_targets",
          "schedules", "schedule_runs", "agent_releases")
# Written in the background, every few seconds: when agents were last seen, and when
# operator tokens were last used.
BACKGROUND = "- 'last_seen_at' - 'last_used_at'"


def snapshot(sql) -> dict:
    out = {}
    for table in TABLES:
        out[table] = sql.execute(
            f"SELECT count(*), md5(coalesce(string_agg((to_jsonb(t) {BACKGROUND})::text, '|' "
            f"ORDER BY (to_jsonb(t) {BACKGROUND})::text), '')) FROM {table} t"
        ).fetchone()
    return out


def audit_events(sql) -> int:
    """Events in the audit trail (refusals with 403 and failed sign-ins add one each)."""
    return sql.execute("SELECT count(*) FROM audit_events").fetchone()[0]


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
