"""The `where` grammar: what parses into which requirements, and every malformed form refused
with where it went wrong (the API answers 400 naming the field and the position)."""

from __future__ import annotations

import pytest

from services.common.where import Requirement, WhereError, compile_requirements, parse


def test_the_documented_example_parses_into_its_four_requirements():
    reqs = parse('facts.os.family = debian, facts.disk_free_gb < 5, labels.env in (prod, staging), !labels.frozen')
    assert reqs == [Requirement("facts", ("os", "family"), "=", ("debian",)),
                    Requirement("facts", ("disk_free_gb",), "<", ("5",)),
                    Requirement("labels", ("env",), "in", ("prod", "staging")),
                    Requirement("labels", ("frozen",), "absent")]


@pytest.mark.parametrize("text,expected", [
    ("labels.env", Requirement("labels", ("env",), "exists")),
    ("labels.env==prod", Requirement("labels", ("env",), "=", ("prod",))),
    ('facts.name != "a \\"quoted\\" value, with comma"', Requirement("facts", ("name",), "!=",
                                                                      ('a "quoted" value, with comma',))),
    ("facts.cpu_count >= 4", Requirement("facts", ("cpu_count",), ">=", ("4",))),
    ("facts.kernel notin (5.10.0-28-amd64, 6.1.0)", Requirement("facts", ("kernel",), "notin",
                                                                ("5.10.0-28-amd64", "6.1.0"))),
    ("labels.in in (in)", Requirement("labels", ("in",), "in", ("in",))),
])
def test_each_form_parses(text, expected):
    assert parse(text) == [expected]


@pytest.mark.parametrize("text,position,what", [
    ("", 0, "empty"),
    ("env = prod", 0, "labels. or facts."),
    ("labels.", 7, "label name"),
    ("facts.os.", 9, "fact name"),
    ("labels.env = ", 13, "a value"),
    ("labels.env ~ prod", 11, "an operator"),
    ("labels.env in prod", 14, "'('"),
    ("labels.env in (a, b", 19, "')'"),
    ('labels.env = "open', 13, "unterminated"),
    ("facts.cpu_count < many", 18, "compares numbers"),
    ("labels.env = prod labels.role = web", 18, "',' between"),
    ("labels.env = prod,", 18, "key"),
    ("labels.env = a;DROP TABLE agents", 14, "',' between"),
    ("facts.a.b.c.d.e.f.g.h.i = 1", 0, "deeper than 8"),
])
def test_malformed_expressions_say_where(text, position, what):
    with pytest.raises(WhereError) as caught:
        parse(text)
    assert caught.value.position == position and what in str(caught.value), str(caught.value)


def test_too_long_or_too_many_is_refused():
    with pytest.raises(WhereError):
        parse("labels.a = b, " * 40 + "labels.a = b")
    with pytest.raises(WhereError):
        parse("labels.a = " + "b" * 5000)


def test_nothing_of_the_expression_reaches_the_sql_text():
    hostile = "labels.x = \"'); DROP TABLE agents; --\", facts.y in (\"$1\", \"a' OR '1'='1\")"
    sql, args = compile_requirements(parse(hostile), 5)
    assert "DROP" not in sql and "OR '1'" not in sql
    assert min(int(n) for n in __import__("re").findall(r"\$([0-9]+)", sql)) == 5
    assert any("DROP TABLE" in str(a) for a in args)  # it travels as a parameter
    assert sql.count("$") == len(args)
