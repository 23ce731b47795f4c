"""Console sessions. A session is opened by auth (POST /api/v1/operators/sign-in) and lives
in PostgreSQL, stored there as a digest of its id only. The cookie holds that id (`fls_...`),
and the console presents it to the admin API as the bearer of every call it makes for the
operator: the API's guard decides what the session may do, with the operator's role and
scope. The console itself keeps nothing but a second's memory of who each session is, so a
restart or a second replica keeps every session, and signing out, disabling the operator
or the session's end are refused by the API at once (and shown here within a second).

A session's CSRF token is derived from its id (a digest under a fixed label): every replica
knows it without storing it, and a page that shows it reveals nothing of the cookie."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Callable

from services.common.operators import ADMIN, OPERATOR, SESSION_PREFIX, role_allows
from services.console.api import AdminApi, Refused

COOKIE = "fleetline_session"
WHO_CACHE_S = 1.0
MAX_ID_CHARS = 128
CACHE_SIZE = 10_000


def csrf_for(session_id: str) -> str:
    return hashlib.sha256(b"fleetline console csrf\x00" + session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    token: str  # the session id: the cookie's value, and the bearer of the console's API calls
    who: dict   # the operator (GET /whoami): id, name, role, scope

    @property
    def csrf(self) -> str:
        return csrf_for(self.token)

    @property
    def may_operate(self) -> bool:
        """Queue, cancel and approve (an operator or an admin)."""
        return role_allows(self.who["role"], OPERATOR)

    @property
    def is_admin(self) -> bool:
        return self.who["role"] == ADMIN


class Sessions:
    """Which operator a session id is, asked of the API and remembered WHO_CACHE_S."""

    def __init__(self, api: AdminApi, clock: Callable[[], float] = time.monotonic):
        self.api, self.clock = api, clock
        self._who: dict[bytes, tuple[dict, float]] = {}

    async def get(self, session_id: str | None) -> Session | None:
        """The session, or None when the id is not one the API accepts (any more)."""
        if not session_id or not session_id.startswith(SESSION_PREFIX) or len(session_id) > MAX_ID_CHARS:
            return None
        key = hashlib.sha256(session_id.encode()).digest()
        cached = self._who.get(key)
        if cached is not None and cached[1] > self.clock():
            return Session(session_id, cached[0])
        try:
            who = await self.api.call(session_id, "GET", "/whoami")
        except Refused as exc:
            if exc.signed_out:
                self._who.pop(key, None)
                return None
            raise
        if len(self._who) >= CACHE_SIZE:
            self._who.clear()
        self._who[key] = (who, self.clock() + WHO_CACHE_S)
        return Session(session_id, who)

    def forget(self, session_id: str | None) -> None:
        if session_id:
            self._who.pop(hashlib.sha256(session_id.encode()).digest(), None)


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted CSRF token with the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
