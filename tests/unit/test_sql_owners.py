"""What each statement writes, read from the SQL of every queries module: one owner for
every transition (only services/dispatch/lifecycle/ creates commands and jobs or changes
their status), and one owner for every table (a service writes only its own tables)."""

from __future__ import annotations

import re

from tests.sql import statements

LIFECYCLE = "services.dispatch.lifecycle.queries"
# Which service writes which table (docs/architecture.md, "Tables and their owners").
OWNERS = {
    "auth": {"registration_tokens", "refresh_token_families", "refresh_tokens", "agents", "operators",
             "operator_tokens", "operator_sessions", "oidc_nonces"},
    "dispatch": {"commands", "deliveries", "jobs", "job_targets", "command_output", "command_keysets",
                 "approval_policy", "agents", "schedules", "schedule_runs", "agent_releases",
                 "webhook_endpoints", "webhook_deliveries"},
}
# Writes outside the owner, each on purpose (the table says why): dispatch marks an agent
# seen, its credentials used, its reported facts and version, and its presence; every service appends audit events and batches its
# operator tokens' last use.
SHARED = {("dispatch", "agents"): {"last_seen_at", "credentials_used_at", "facts", "facts_updated_at", "agent_version",
                                  "presence"}}
COMMON = {"audit_events", "operator_tokens"}

# (A row lock, `FOR [NO KEY] UPDATE [OF c]`, writes nothing.)
WRITE = re.compile(r"\b(INSERT\s+INTO|(?<!FOR )(?<!KEY )UPDATE|DELETE\s+FROM)\s+([a-z_]+)", re.IGNORECASE)


def writes(sql: str) -> set[str]:
    return {table.lower() for _, table in WRITE.findall(sql)}


def changes_status(sql: str, table: str) -> bool:
    """An INSERT into the table (a new row has a status) or an UPDATE of it that sets status."""
    if re.search(rf"\bINSERT\s+INTO\s+{table}\b", sql, re.IGNORECASE):
        return True
    for update in re.finditer(rf"\bUPDATE\s+{table}\b(?:\s+[a-z]\b)?\s+SET\b(.*?)(?:\bWHERE\b|\bFROM\b|$)", sql,
                              re.IGNORECASE | re.DOTALL):
        if re.search(r"(^|[\s,.])status\s*=", update.group(1)):
            return True
    return False


def test_only_the_lifecycle_creates_commands_and_jobs_or_changes_their_status():
    outside = [f"{module}.{name}" for module, name, sql in statements() if module != LIFECYCLE
               and any(changes_status(sql, t) for t in ("commands", "jobs"))]
    assert outside == []
    inside = [name for module, name, sql in statements() if module == LIFECYCLE and changes_status(sql, "commands")]
    assert {"CLAIM", "ACK", "REPORT_RESULT", "CREATE_COMMAND", "CANCEL_COMMAND", "CREATE_JOB_COMMANDS"} <= set(inside)


def test_the_check_itself_sees_a_status_change_written_anywhere():
    assert changes_status("UPDATE commands SET status = 'failed' WHERE id = $1", "commands")
    assert changes_status("UPDATE commands c\n   SET output_bytes = 1, status = 'x' FROM t", "commands")
    assert changes_status("INSERT INTO jobs (id) VALUES ($1)", "jobs")
    assert not changes_status("UPDATE commands SET output_truncated = true WHERE status = 'running'", "commands")
    assert not changes_status("DELETE FROM commands WHERE id = $1", "commands")


def test_each_service_writes_only_the_tables_it_owns():
    strays = []
    for module, name, sql in statements():
        service = module.split(".")[1]
        for table in writes(sql):
            if service == "common" and table in COMMON:
                continue
            if table not in OWNERS.get(service, set()):
                strays.append(f"{module}.{name} writes {table}")
            elif (service, table) in SHARED:
                columns = set(re.findall(r"\bSET\s+([a-z_]+)", sql, re.IGNORECASE))
                if not columns <= SHARED[(service, table)]:
                    strays.append(f"{module}.{name} writes {table}.{columns - SHARED[(service, table)]}")
    assert strays == []
