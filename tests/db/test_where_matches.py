"""`where` in the database equals `where` in words: for random expressions over random agents
(labels, nested facts, arrays, numbers, booleans, nulls), the agents PostgreSQL's compiled
predicate matches are exactly those a pure Python evaluator written from the API's text
(tests/where_oracle.py) picks. Values that look like SQL match nothing and change nothing."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.where import compile_requirements, parse
from tests.where_oracle import matches

LABEL_KEYS = ("env", "role", "tier")
LABEL_VALUES = ("prod", "staging", "web", "db", "1", "2.5", "-3")
WORDS = ("debian", "ubuntu", "rhel", "x86_64", "4", "4.0", "2.5", "true", "false", "a b", "", "'; DROP TABLE t; --")
NUMBERS = st.one_of(st.integers(-5, 10), st.sampled_from([0.5, 2.5, 4.0, -1.25]))
SCALARS = st.one_of(NUMBERS, st.sampled_from(WORDS), st.booleans(), st.none())

FACTS = st.fixed_dictionaries({}, optional={
    "os": st.fixed_dictionaries({}, optional={"family": st.sampled_from(WORDS[:3]), "version": SCALARS}),
    "cpu_count": NUMBERS,
    "disk_free_gb": SCALARS,
    "disks": st.lists(st.fixed_dictionaries({}, optional={"mount": st.sampled_from(("/", "/var")),
                                                            "free_gb": SCALARS}), max_size=3),
    "tags": st.lists(SCALARS, max_size=3),
    "flag": st.booleans(),
    "name": SCALARS,
})
AGENTS = st.lists(st.tuples(st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=3),
                            FACTS), min_size=1, max_size=12)
KEYS = ("labels.env", "labels.role", "labels.missing", "facts.os.family", "facts.os.version", "facts.cpu_count",
        "facts.disk_free_gb", "facts.disks.free_gb", "facts.disks.mount", "facts.tags", "facts.flag",
        "facts.name", "facts.missing.deep", "facts.os")


def _quoted(word: str) -> str:
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def requirement(draw) -> str:
    key = draw(st.sampled_from(KEYS))
    op = draw(st.sampled_from(("exists", "absent", "=", "==", "!=", "<", "<=", ">", ">=", "in", "notin")))
    if op == "exists":
        return key
    if op == "absent":
        return f"!{key}"
    if op in ("<", "<=", ">", ">="):
        return f"{key} {op} {draw(st.sampled_from(('0', '4', '2.5', '-1', '10')))}"
    words = draw(st.lists(st.sampled_from(WORDS + LABEL_VALUES), min_size=1, max_size=3))
    rendered = [_quoted(w) for w in words]
    if op in ("in", "notin"):
        return f"{key} {op} ({', '.join(rendered)})"
    return f"{key} {op} {rendered[0]}"


EXPRESSIONS = st.lists(requirement(), min_size=1, max_size=4).map(", ".join)


async def _matched(db, expression: str) -> set[int]:
    sql, args = compile_requirements(parse(expression), 1)
    return {r[0] for r in await db.fetch(f"SELECT id FROM where_agents a WHERE {sql}", *args)}


def test_the_database_matches_what_the_words_say(db, sql):
    sql.execute("CREATE TABLE where_agents (id int PRIMARY KEY, labels jsonb NOT NULL, facts jsonb NOT NULL)")
    loop = asyncio.get_event_loop()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(agents=AGENTS, expressions=st.lists(EXPRESSIONS, min_size=1, max_size=5))
    def check(agents, expressions):
        sql.execute("TRUNCATE where_agents")
        for i, (labels, facts) in enumerate(agents):
            sql.execute("INSERT INTO where_agents VALUES (%s, %s, %s)", (i, json.dumps(labels), json.dumps(facts)))
        for expression in expressions:
            reqs = parse(expression)
            expected = {i for i, (labels, facts) in enumerate(agents) if matches(reqs, labels, facts)}
            assert loop.run_until_complete(_matched(db, expression)) == expected, (expression, agents)

    check()
    assert sql.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'where_agents'").fetchone() == (1,)
