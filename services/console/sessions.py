"""Console sessions, held in the console's memory: the cookie carries only a random session
id; the admin token it was opened with stays here (never in a cookie, a page or a log).

A session ends at its expiry (at most 12 hours after sign-in), at sign-out, or when the
console restarts (operators sign in again). Sessions are keyed by a digest of their id, so
even a dump of this memory holds no cookie value."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

COOKIE = "fleetline_session"
MAX_SESSIONS = 10000


@dataclass(frozen=True)
class Session:
    admin_token: str
    csrf: str           # every state-changing form carries it
    expires_at: float   # time.time()


def _key(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


class Sessions:
    def __init__(self, length_s: int, clock: Callable[[], float] = time.time):
        self.length_s, self.clock = length_s, clock
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()

    def open(self, admin_token: str) -> tuple[str, Session]:
        """A new session: its id (the cookie's value) and what it holds."""
        session_id = secrets.token_urlsafe(32)
        session = Session(admin_token, secrets.token_urlsafe(32), self.clock() + self.length_s)
        self._sessions[_key(session_id)] = session
        while len(self._sessions) > MAX_SESSIONS:  # the oldest sign-in goes first
            self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is not None and session.expires_at <= self.clock():
            del self._sessions[key]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_key(session_id), None)


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted CSRF token with the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
