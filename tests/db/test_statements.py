"""Every SQL statement of every service's queries module is prepared once, against the
schema the migrations make, as the role the services connect as: a typo, a missing column
or a wrong type fails here in seconds, not in a request. And the status words the CHECK
constraints allow are the kernel's vocabulary, exactly."""

from __future__ import annotations

import re

import asyncpg

from fleetline import statuses
from fleetline.settings import postgres_url
from services.auth import queries as auth_queries
from services.common import queries as common_queries
from services.dispatch import queries as dispatch_queries

MODULES = (auth_queries, common_queries, dispatch_queries)
STATEMENT = re.compile(r"\s*(WITH|SELECT|INSERT|UPDATE|DELETE|SET)\b", re.IGNORECASE)


def statements() -> list[tuple[str, str]]:
    found = []
    for module in MODULES:
        for name, value in vars(module).items():
            if name.startswith("_"):  # a template or fragment, not a statement
                continue
            if isinstance(value, str) and name.isupper() and STATEMENT.match(value):
                found.append((f"{module.__name__.split('.')[1]}.{name}", value))
            elif isinstance(value, dict) and name.isupper():  # statements chosen by filters
                found += [(f"{module.__name__}.{name}[{key}]", v) for key, v in value.items()
                          if isinstance(v, str) and STATEMENT.match(v)]
    return found


def test_the_queries_modules_hold_the_statements_we_expect():
    names = {n for n, _ in statements()}
    assert len(names) > 60
    assert {"dispatch.CLAIM", "dispatch.ACK", "dispatch.REPORT_RESULT", "auth.LOCK_REGISTRATION_TOKEN",
            "auth.ISSUE_SUCCESSOR", "dispatch.REAP_REVOKED_AGENTS_JOB_COMMANDS"} <= names


async def test_every_statement_of_every_queries_module_prepares(databases, database_url):
    conn = await asyncpg.connect(postgres_url(databases.service_url(database_url)))
    failures = []
    try:
        for name, sql in statements():
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:
                failures.append(f"{name}: {exc}")
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
