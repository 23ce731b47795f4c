"""A fingerprint of every table, to prove that a refused request changed nothing.
(`last_seen_at` is left out: dispatch writes it in the background, every few seconds.)"""

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
