"""`where` selectors (docs/api.md, facts, labels and selectors): an expression parsed into
requirements, and the requirements compiled into one parameterised SQL predicate over an
agents row. Values, keys and paths are always parameters: nothing of the expression is
ever spliced into SQL.

    expression  := requirement ("," requirement)*
    requirement := "!" key | key | key op value | key ("in" | "notin") "(" value ("," value)* ")"
    op          := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="
    key         := "labels." name | "facts." segment ("." segment)*
    value       := a bare word [A-Za-z0-9._/:-]+ | a double-quoted string (\\" and \\\\ escaped)

Semantics (Kubernetes label selectors, extended with numbers): all requirements must hold;
`key` exists, `!key` is absent; `=`/`==`/`in` hold when the value (any element, on an
array fact) equals one given, compared as text (a number or a boolean fact by its JSON
text); `!=` and `notin` hold when those do not (an absent key included); `<`, `<=`, `>`,
`>=` compare numbers, and a fact that is not a number never matches. A path through an
array looks into each element (`facts.disks.free_gb < 5`: any disk).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

MAX_LENGTH = 4096
MAX_REQUIREMENTS = 32
OPS = ("=", "==", "!=", "<", "<=", ">", ">=", "in", "notin")
NUMERIC = ("<", "<=", ">", ">=")
_BARE = re.compile(r"[A-Za-z0-9._/:-]+")
_LABEL = re.compile(r"[A-Za-z0-9._/-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


class WhereError(ValueError):
    """A malformed expression: what is wrong, and where (a 0-based character position)."""

    def __init__(self, message: str, position: int):
        super().__init__(f"{message} at position {position}")
        self.position = position


@dataclass(frozen=True)
class Requirement:
    kind: str              # "labels" or "facts"
    path: tuple[str, ...]  # (name,) for a label; the dotted path for a fact
    op: str                # "exists", "absent", or one of OPS
    values: tuple[str, ...] = ()

    def number(self) -> float:
        return float(self.values[0])


class _Reader:
    def __init__(self, text: str):
        self.text, self.at = text, 0

    def space(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in " \t":
            self.at += 1

    def peek(self, token: str) -> bool:
        self.space()
        return self.text.startswith(token, self.at)

    def take(self, token: str) -> bool:
        if self.peek(token):
            self.at += len(token)
            return True
        return False

    def expect(self, token: str, what: str) -> None:
        if not self.take(token):
            raise WhereError(f"expected {what}", self.at)

    def word(self, pattern: re.Pattern[str], what: str) -> str:
        self.space()
        found = pattern.match(self.text, self.at)
        if not found:
            raise WhereError(f"expected {what}", self.at)
        self.at = found.end()
        return found.group()

    def value(self) -> str:
        self.space()
        if self.take('"'):
            out, start = [], self.at - 1
            while self.at < len(self.text):
                ch = self.text[self.at]
                self.at += 1
                if ch == "\\" and self.at < len(self.text) and self.text[self.at] in '"\\':
                    out.append(self.text[self.at])
                    self.at += 1
                elif ch == '"':
                    return "".join(out)
                elif ch < " ":
                    raise WhereError("a control character in a quoted value", self.at - 1)
                else:
                    out.append(ch)
            raise WhereError("an unterminated quoted value", start)
        return self.word(_BARE, "a value (a word or a double-quoted string)")

    def done(self) -> bool:
        self.space()
        return self.at >= len(self.text)


def _key(r: _Reader) -> tuple[str, tuple[str, ...]]:
    start = r.at
    kind = r.word(re.compile(r"labels|facts"), "a key starting labels. or facts.")
    r.expect(".", f"'.' after {kind}")
    if kind == "labels":
        return kind, (r.word(_LABEL, "a label name"),)
    path = [r.word(_SEGMENT, "a fact name")]
    while r.text.startswith(".", r.at):
        r.at += 1
        path.append(r.word(_SEGMENT, "a fact name after '.'"))
    if len(path) > 8:
        raise WhereError("a fact path deeper than 8", start)
    return kind, tuple(path)


def _requirement(r: _Reader) -> Requirement:
    r.space()
    if r.take("!"):
        kind, path = _key(r)
        return Requirement(kind, path, "absent")
    kind, path = _key(r)
    r.space()
    for op in ("==", "!=", "<=", ">=", "=", "<", ">"):
        if r.take(op):
            r.space()
            position = r.at
            value = r.value()
            if op in NUMERIC and not _NUMBER.fullmatch(value):
                raise WhereError(f"{op} compares numbers: {value!r} is not one", position)
            return Requirement(kind, path, "=" if op == "==" else op, (value,))
    for op in ("notin", "in"):
        if r.peek(op) and not _BARE.match(r.text, r.at + len(op)):
            r.take(op)
            r.expect("(", f"'(' after {op}")
            values = [r.value()]
            while r.take(","):
                values.append(r.value())
            r.expect(")", "')' or ','")
            return Requirement(kind, path, op, tuple(values))
    if r.done() or r.peek(","):
        return Requirement(kind, path, "exists")
    raise WhereError("expected an operator (=, ==, !=, <, <=, >, >=, in, notin), ',' or the end", r.at)


def parse(text: str) -> list[Requirement]:
    if len(text) > MAX_LENGTH:
        raise WhereError(f"an expression longer than {MAX_LENGTH} characters", MAX_LENGTH)
    r = _Reader(text)
    if r.done():
        raise WhereError("an empty expression", 0)
    out = [_requirement(r)]
    while not r.done():
        r.expect(",", "',' between requirements")
        out.append(_requirement(r))
        if len(out) > MAX_REQUIREMENTS:
            raise WhereError(f"more than {MAX_REQUIREMENTS} requirements", r.at)
    return out


# --- compiling: one predicate over an agents row aliased `a` -------------------------------

def _jsonpath(path: tuple[str, ...], condition: str = "") -> str:
    """A jsonpath (lax: arrays on the way are looked into) for a validated path; passed to
    the database as a parameter, never spliced into SQL."""
    steps = "".join(f".{json.dumps(p)}" for p in path)
    return f"${steps}" + (f" ? ({condition})" if condition else "")


def _vars(value: str) -> dict:
    """What a value is compared with: its text, and its number or boolean when it is one
    (a fact 4 equals the value 4; a fact "4" equals it too, as text)."""
    out: dict = {"s": value}
    if _NUMBER.fullmatch(value):
        out["n"] = float(value) if any(c in value for c in ".eE") else int(value)
    if value in ("true", "false"):
        out["b"] = value == "true"
    return out




def _equals(given: dict) -> str:
    """The jsonpath condition of equality with a value's forms (a number or a boolean only
    when it is one: `@ == null` would match a null fact)."""
    return " || ".join(f"@ == ${k}" for k in ("s", "n", "b") if k in given)


def compile_requirements(reqs: list[Requirement], first: int) -> tuple[str, list]:
    """`(sql, args)`: a predicate over `a` (labels, facts), its parameters numbered from
    `first`."""
    parts, args = [], []

    def arg(value: object) -> str:
        args.append(value)
        return f"${first + len(args) - 1}"

    for req in reqs:
        if req.kind == "labels":
            name = arg(req.path[0])
            if req.op == "exists":
                parts.append(f"(a.labels ? {name})")
            elif req.op == "absent":
                parts.append(f"NOT (a.labels ? {name})")
            elif req.op in ("=", "in"):
                parts.append(f"(a.labels ->> {name}) = ANY({arg(list(req.values))}::text[])")
            elif req.op in ("!=", "notin"):
                parts.append(f"NOT coalesce((a.labels ->> {name}) = ANY({arg(list(req.values))}::text[]), false)")
            else:
                parts.append(f"(CASE WHEN (a.labels ->> {name}) ~ '^-?[0-9]+(\\.[0-9]+)?$' "
                             f"THEN (a.labels ->> {name})::numeric {req.op} {arg(req.number())}::numeric END)")
                continue
            continue
        if req.op == "exists":
            parts.append(f"jsonb_path_exists(a.facts, {arg(_jsonpath(req.path))}::jsonpath)")
        elif req.op == "absent":
            parts.append(f"NOT jsonb_path_exists(a.facts, {arg(_jsonpath(req.path))}::jsonpath)")
        elif req.op in NUMERIC:
            cond = f'@.type() == "number" && @ {req.op} $n'
            parts.append(f"jsonb_path_exists(a.facts, {arg(_jsonpath(req.path, cond))}::jsonpath, "
                         f"{arg({'n': req.number()})}::jsonb)")
        else:
            anyof = " OR ".join(f"jsonb_path_exists(a.facts, {arg(_jsonpath(req.path, _equals(_vars(v))))}::jsonpath, "
                                f"{arg(_vars(v))}::jsonb)" for v in req.values)
            parts.append(f"({anyof})" if req.op in ("=", "in") else f"NOT coalesce({anyof}, false)")
    return " AND ".join(f"coalesce({p}, false)" for p in parts), args
