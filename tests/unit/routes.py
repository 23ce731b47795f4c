"""Every (method, path) each service serves, read from the route lists its app is built
from, for the tests that keep the gateway's table and the OpenAPI document in step."""

from __future__ import annotations

from services.auth import app as auth_app
from services.common.admin import ADMIN_PREFIX
from services.dispatch import app as dispatch_app

SERVICES = {"auth": auth_app, "dispatch": dispatch_app}


def service_routes() -> list[tuple[str, str, str]]:
    """(service, method, path template) for every API route."""
    out = []
    for name, module in SERVICES.items():
        public = [*module.AGENT_ROUTES, *getattr(module, "OPERATOR_ROUTES", [])]
        for prefix, routes in (("", public), (ADMIN_PREFIX, module.ADMIN_ROUTES)):
            for route in routes:
                for method in route.methods:
                    out.append((name, method, prefix + route.path))
    return out


def console_paths() -> list[str]:
    """Every path the console serves (pages, forms, events, static files): HTML, so not in
    the API's OpenAPI document, but routed by the gateway all the same."""
    from services.console.app import ROUTES

    return [r.path for r in ROUTES]


def example(template: str) -> str:
    """A concrete path for a template: every {param} becomes a UUID."""
    import re

    return re.sub(r"\{[^}]+\}", "6f1c2a9e-8a47-4c1e-9d55-0b7d1f6f3e21", template)
