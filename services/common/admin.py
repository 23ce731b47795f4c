"""The operator guard: every route mounted under /api/v1/admin requires the admin token,
so a new admin route cannot forget its check."""

from __future__ import annotations

import hashlib
import hmac
from typing import Sequence

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.errors import invalid_token
from services.common.tokens import bearer_token

ADMIN_PREFIX = "/api/v1/admin"


class AdminGuard:
    """Checks `Authorization: Bearer <admin token>` (its SHA-256, compared in constant
    time) before any admin route runs. A path that matches no admin route is left to the
    router's 404, so unknown paths answer the same with or without a token."""

    def __init__(self, app: ASGIApp, token: str, routes: Sequence[BaseRoute]):
        self.app, self.routes = app, routes
        self._hash = hashlib.sha256(token.encode("utf-8")).digest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(r.matches(scope)[0] != Match.NONE for r in self.routes):
            token = bearer_token(Request(scope))
            presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
            if not token or not hmac.compare_digest(presented, self._hash):
                raise invalid_token("A valid admin token is required.")
        await self.app(scope, receive, send)


def admin_mount(routes: Sequence[BaseRoute], token: str) -> Mount:
    """The admin routes (paths relative to /api/v1/admin) behind one AdminGuard."""
    # No trailing-slash redirects in here either: nothing under /api/ redirects.
    return Mount(ADMIN_PREFIX, app=Router(list(routes), redirect_slashes=False),
                 middleware=[Middleware(AdminGuard, token=token, routes=routes)])
