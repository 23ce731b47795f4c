"""A pure Python evaluator of `where` requirements, written from docs/api.md alone: the
oracle the database's matches are compared with (tests/db/test_where_matches.py)."""

from __future__ import annotations

import operator
import re

from services.common.where import Requirement

NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def found(facts: dict, path: tuple[str, ...]) -> list:
    """What a path reaches, looking into each element of an array on the way."""
    current: list = [facts]
    for segment in path:
        nxt = []
        for value in current:
            for item in (value if isinstance(value, list) else [value]):
                if isinstance(item, dict) and segment in item:
                    nxt.append(item[segment])
        current = nxt
    return current


def _items(values: list) -> list:
    out = []
    for value in values:
        out.extend(value if isinstance(value, list) else [value])
    return out


def _equals(item: object, text: str) -> bool:
    if isinstance(item, str):
        return item == text
    if isinstance(item, bool):
        return text in ("true", "false") and item == (text == "true")
    if _is_number(item):
        try:
            return float(item) == float(text)
        except ValueError:
            return False
    return False


def holds(req: Requirement, labels: dict, facts: dict) -> bool:
    if req.kind == "labels":
        value = labels.get(req.path[0])
        if req.op == "exists":
            return value is not None
        if req.op == "absent":
            return value is None
        if req.op in ("=", "in"):
            return value in req.values
        if req.op in ("!=", "notin"):
            return value not in req.values
        return value is not None and bool(NUMBER.match(value)) and COMPARE[req.op](float(value), req.number())
    reached = found(facts, req.path)
    if req.op == "exists":
        return bool(reached)
    if req.op == "absent":
        return not reached
    items = _items(reached)
    if req.op in COMPARE:
        return any(_is_number(i) and COMPARE[req.op](float(i), req.number()) for i in items)
    hit = any(_equals(i, v) for i in items for v in req.values)
    return hit if req.op in ("=", "in") else not hit


def matches(reqs: list[Requirement], labels: dict, facts: dict) -> bool:
    return all(holds(r, labels, facts) for r in reqs)
