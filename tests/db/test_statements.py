"""Every SQL statement of every service's queries module is prepared once, against the
schema the migrations make, as the role the services connect as: a typo, a missing column
or a wrong type fails here in seconds, not in a request. And the status words the CHECK
constraints allow are the kernel's vocabulary, exactly."""

from __future__ import annotations

import re

import asyncpg

from fleetline import statuses
from fleetline.settings import postgres_url
from tests.sql import statements


def test_the_queries_modules_hold_the_statements_we_expect():
    names = {f"{module}.{name}" for module, name, _ in statements()}
    assert len(names) > 100
    assert {"services.dispatch.lifecycle.queries.CLAIM", "services.dispatch.lifecycle.queries.ACK",
            "services.auth.queries.LOCK_REGISTRATION_TOKEN", "services.auth.queries.ISSUE_SUCCESSOR",
            "services.dispatch.output.queries.APPEND_OUTPUT", "services.dispatch.retention.queries.PRUNE_COMMANDS",
            "services.dispatch.agents.queries.MARK_AGENTS_USED", "services.common.queries.INSERT_AUDIT_EVENT"} <= names


async def test_every_statement_of_every_queries_module_prepares(databases, database_url):
    conn = await asyncpg.connect(postgres_url(databases.service_url(database_url)))
    failures = []
    try:
        for module, name, sql in statements():
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:
                failures.append(f"{module}.{name}: {exc}")
    finally:
        await conn.close()
    assert failures == []


def _allowed(sql, table: str) -> set[str]:
    """The words the CHECK constraint on `table.status` allows."""
    (definition,) = [d for (d,) in sql.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c' "
        "AND conname = %s", (table, f"{table}_status_check"))]
    return set(re.findall(r"'([a-z_]+)'::text", definition))


def test_the_schemas_status_words_are_the_kernels_vocabulary(sql):
    assert _allowed(sql, "commands") == set(statuses.COMMAND_STATUSES)
    assert _allowed(sql, "jobs") == set(statuses.JOB_STATUSES)
    assert _allowed(sql, "agents") == set(statuses.AGENT_STATUSES)
