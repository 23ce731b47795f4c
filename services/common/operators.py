"""Who is asking: an operator, from its bearer credential. The same in every service:

- the bootstrap token (FLEETLINE_ADMIN_TOKEN): the built-in admin `bootstrap`;
- an operator token (`flop_...`): its operator, while the token is neither revoked nor
  expired and the operator not disabled;
- a console session (`fls_...`, the console's cookie value): its operator, likewise.

Only SHA-256 digests are looked up. Answers are cached, but only while the process hears
`fleetline_operators` (its LISTEN connection is up): every change that can refuse a
credential (a token revoked, a session ended, an operator disabled or its role or scope
changed) notifies on it in its own transaction, and every process forgets what it had
cached. So a revocation takes effect everywhere within the notification's delivery
(milliseconds), not a cache's lifetime; while the connection is down nothing is cached.
CACHE_S (5 s) bounds an answer's age regardless. When tokens were last used is written in
batches (`TokenUse`)."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from services.common import queries as q
from services.common.audit import BOOTSTRAP_ID, Actor
from services.common.db import Db
from services.common.periodic import Periodic

CACHE_S = 5.0
CACHE_SIZE = 100_000

TOKEN_PREFIX = "flop_"
SESSION_PREFIX = "fls_"

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)  # each may what the ones before it may


def role_allows(role: str, least: str) -> bool:
    return ROLES.index(role) >= ROLES.index(least)


@dataclass(frozen=True)
class Scope:
    """What an operator reaches: agents carrying every label pair ({}: all), and the
    command types it may queue (("*",): all). Admins have no scope."""
    labels: dict = field(default_factory=dict)
    command_types: tuple = ("*",)

    @classmethod
    def of(cls, role: str, stored: dict | None) -> "Scope":
        if role == ADMIN or not stored:
            return cls()
        return cls(dict(stored.get("labels") or {}), tuple(stored.get("command_types") or ("*",)))

    @property
    def everything(self) -> bool:
        return not self.labels and "*" in self.command_types

    def allows_type(self, command_type: str) -> bool:
        return "*" in self.command_types or command_type in self.command_types

    def covers(self, labels: dict) -> bool:
        """Whether an agent (or a job's known target labels) carrying `labels` is within."""
        return all(labels.get(k) == v for k, v in self.labels.items())

    def as_dict(self) -> dict:
        return {"labels": self.labels, "command_types": list(self.command_types)}


EVERYTHING = Scope()  # an admin's, or an unscoped operator's


@dataclass(frozen=True)
class Operator:
    id: uuid.UUID
    name: str
    role: str
    scope: Scope
    token_id: uuid.UUID | None = None  # the operator token used, if one was
    bootstrap_hash: bytes | None = None  # the bootstrap token's digest, when it was used

    @property
    def actor(self) -> Actor:
        return Actor("bootstrap" if self.id == BOOTSTRAP_ID else "operator", self.id, self.name)

    def may(self, least_role: str) -> bool:
        return role_allows(self.role, least_role)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class TokenUse(Periodic):
    """`last_used_at` of operator tokens, one batched UPDATE per interval."""

    def __init__(self, db: Db, interval_s: float = 5.0, component: str = "common"):
        self.db = db
        self._used: dict[uuid.UUID, datetime] = {}
        super().__init__("token_use", interval_s, self.flush, component=component)

    def mark(self, token_id: uuid.UUID) -> None:
        self._used[token_id] = datetime.now(timezone.utc)

    async def flush(self) -> None:
        if not self._used:
            return
        batch, self._used = self._used, {}
        ids = sorted(batch)
        await self.db.execute(q.TOUCH_OPERATOR_TOKENS, ids, [batch[i] for i in ids])

    async def stop(self) -> None:
        await super().stop()
        await self.flush()


class OperatorAuth:
    """Bearer credential -> Operator (or None), cached while `listening()` says changes are
    heard (and at most CACHE_S); `changed()` is what a notification calls."""

    def __init__(self, db: Db, bootstrap_token: str | None, token_use: TokenUse,
                 clock: Callable[[], float] = time.monotonic, listening: Callable[[], bool] = lambda: False):
        self.db, self.token_use, self.clock, self.listening = db, token_use, clock, listening
        self._bootstrap = digest(bootstrap_token) if bootstrap_token else None
        self._cache: dict[bytes, tuple[Operator | None, float]] = {}

    def changed(self, operator_id: str = "") -> None:
        """An operator or one of its credentials changed somewhere: look everyone up again."""
        self._cache.clear()

    async def authenticate(self, credential: str) -> Operator | None:
        if not credential:
            return None
        key = digest(credential)
        cached = self._cache.get(key)
        now = self.clock()
        if cached is not None and cached[1] > now and self.listening():
            operator = cached[0]
        else:
            operator = await self._look_up(credential, key)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = (operator, now + CACHE_S)
        if operator is not None and operator.token_id is not None:
            self.token_use.mark(operator.token_id)
        return operator

    def forget(self, credential: str) -> None:
        """Drop a credential this process has just ended (a sign-out): refused here at once."""
        self._cache.pop(digest(credential), None)

    async def _look_up(self, credential: str, key: bytes) -> Operator | None:
        if self._bootstrap is not None and hmac.compare_digest(key, self._bootstrap):
            row = await self.db.fetchrow(q.BOOTSTRAP_OPERATOR)
            return Operator(row["id"], row["name"], row["role"], Scope(), bootstrap_hash=key)
        if credential.startswith(TOKEN_PREFIX):
            row = await self.db.fetchrow(q.OPERATOR_BY_TOKEN, key)
        elif credential.startswith(SESSION_PREFIX):
            row = await self.db.fetchrow(q.OPERATOR_BY_SESSION, key, self._bootstrap)
        else:
            return None
        if row is None or row["disabled_at"] is not None:
            return None
        return Operator(row["id"], row["name"], row["role"], Scope.of(row["role"], row["scope"]),
                        row.get("token_id"))
