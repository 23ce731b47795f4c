"""A fingerprint of every table, to prove that a refused request changed nothing."""

TABLES = ("registration_tokens", "agents", "refresh_token_families", "refresh_tokens", "commands", "deliveries",
          "command_keysets")


def snapshot(sql) -> dict:
    out = {}
    for table in TABLES:
        out[table] = sql.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
            f"FROM {table} t"
        ).fetchone()
    return out
