"""The operator guard: every route mounted under /api/v1/admin sits behind it, so a new admin
route cannot forget its check. For each request it finds the route, looks up its line in
the service's access table (the least role, and the audit action), authenticates the
bearer credential (operators.py), refuses a role too low with `403 forbidden` (recorded in
the audit trail by errors.py, as every 403 forbidden is), and hands the handler who asks: `request.state.operator` (role and
scope) and `request.state.audit` (the actor, request id and address every event carries).

A path that matches no admin route, or a method none lists, is left to the router (404,
405): unknown paths answer the same with or without a credential."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from fleetline.http import header_value
from services.common import audit
from services.common.errors import forbidden, invalid_token
from services.common.http import client_address
from services.common.operators import OperatorAuth
from services.common.tokens import bearer_token

ADMIN_PREFIX = "/api/v1/admin"


@dataclass(frozen=True)
class Access:
    """Who may call one admin route: the least role, and the action its audit events name."""
    role: str
    action: str


def access_key(method: str, path: str) -> str:
    return f"{method} {path}"


class AdminGuard:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], access: Mapping[str, Access],
                 auth: OperatorAuth, trusted_proxies: tuple[str, ...]):
        self.app, self.routes, self.access, self.auth = app, routes, access, auth
        self.trusted_proxies = trusted_proxies

    def _access(self, scope: Scope) -> tuple[Access, str | None] | None:
        """The route's access line, and the id in its path (what a refusal names)."""
        for route in self.routes:
            match, child = route.matches(scope)
            if match == Match.FULL and isinstance(route, Route):
                target = next(iter(child.get("path_params", {}).values()), None)
                target = target[:128] if isinstance(target, str) else target  # any text: bounded
                return self.access[access_key(scope["method"], route.path)], target
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._access(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        needed, target = found
        request = Request(scope)
        operator = await self.auth.authenticate(bearer_token(request))
        if operator is None:
            raise invalid_token("A valid operator token, console session or bootstrap token is required.")
        context = audit.Context(operator.actor, header_value(scope["headers"], b"x-request-id"),
                                client_address(request, self.trusted_proxies))
        # Set before the role check: a refusal is recorded (errors.py) with who and what.
        scope.setdefault("state", {}).update(operator=operator, audit=context, action=needed.action,
                                             target=target)
        if not operator.may(needed.role):
            raise forbidden("forbidden", f"The {operator.role} role may not do this; it takes {needed.role}.",
                            {"required_role": needed.role})
        await self.app(scope, receive, send)


def admin_mount(routes: Sequence[BaseRoute], access: Mapping[str, Access], auth: OperatorAuth,
                trusted_proxies: tuple[str, ...]) -> Mount:
    """The admin routes (paths relative to /api/v1/admin) behind one AdminGuard. Every
    (method, path) of `routes` must have its line in `access`."""
    missing = [access_key(m, r.path) for r in routes if isinstance(r, Route) for m in sorted(r.methods or ())
               if access_key(m, r.path) not in access]
    if missing:
        raise ValueError(f"admin routes without an access rule: {', '.join(missing)}")
    # No trailing-slash redirects in here either: nothing under /api/ redirects.
    return Mount(ADMIN_PREFIX, app=Router(list(routes), redirect_slashes=False),
                 middleware=[Middleware(AdminGuard, routes=routes, access=access, auth=auth,
                                        trusted_proxies=trusted_proxies)])
