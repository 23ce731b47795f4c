"""The approval policy, as pure decisions: which requests need a second person.

A policy is a list of rules, the number of distinct approvers a matching request needs, and
how long it may wait. A request needs approval when **any** rule matches; a rule matches
when **all** its conditions do:

- `command_types`: the request's type is one of them;
- `min_targets`: it targets at least that many agents;
- `all_active`: it is a job selecting every active agent;
- `labels`: one of its targets carries every pair (the caller asks the database, which
  holds the targets' labels: `carried`, one answer per label rule, in order).

The policy is one row; dispatch reads it through a cache at most CACHE_S old (a change made
through this process is seen at once)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

CACHE_S = 5.0
CONDITIONS = ("command_types", "min_targets", "all_active", "labels")


@dataclass(frozen=True)
class Policy:
    rules: tuple = ()
    approvals: int = 1
    expires_in_s: int = 86400

    def label_rules(self) -> list[dict]:
        """The `labels` condition of each rule that has one, in rule order."""
        return [r["labels"] for r in self.rules if "labels" in r]

    def as_dict(self) -> dict:
        return {"rules": list(self.rules), "approvals": self.approvals, "expires_in_s": self.expires_in_s}


NO_POLICY = Policy()


@dataclass(frozen=True)
class Request:
    command_type: str
    target_count: int
    all_active: bool = False
    carried: Sequence[bool] = field(default_factory=tuple)  # per label rule: a target carries it


def needs_approval(policy: Policy, request: Request) -> bool:
    labels_seen = 0
    for rule in policy.rules:
        matched = True
        if "command_types" in rule:
            matched &= request.command_type in rule["command_types"]
        if "min_targets" in rule:
            matched &= request.target_count >= rule["min_targets"]
        if "all_active" in rule:
            matched &= request.all_active == rule["all_active"]
        if "labels" in rule:
            matched &= bool(request.carried[labels_seen])
            labels_seen += 1
        if matched:
            return True
    return False


def approved_enough(approvals: Sequence[dict], required: int) -> bool:
    return len({a["operator"]["id"] for a in approvals}) >= required


class PolicyCache:
    def __init__(self, read: Callable, clock: Callable[[], float] = time.monotonic):
        self._read, self.clock = read, clock
        self._policy: Policy | None = None
        self._until = 0.0

    async def get(self) -> Policy:
        if self._policy is None or self.clock() >= self._until:
            self._policy = await self._read()
            self._until = self.clock() + CACHE_S
        return self._policy

    def forget(self) -> None:
        self._policy = None
