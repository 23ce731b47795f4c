"""The auth service: registration, renewal, JWKS, registration-token and agent admin."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from fleetline.ethos import Log
from fleetline.http import Metrics
from fleetline.settings import Settings, postgres_url
from services.auth import admin_api, agents_api
from fleetline.signing import root_key_sha256
from services.auth.keys import Signer
from services.common.admin import admin_mount
from services.common.db import Db
from services.auth.api_errors import EXCEPTION_HANDLERS
from services.common.http import ServiceMiddleware, api_route, health_routes
from services.common.ratelimit import RateLimit, make_storage
from services.common.readiness import SchemaCheck

_log = Log("auth", "lifecycle")

AGENT_ROUTES = [
    api_route("/api/v1/agents/register", POST=agents_api.register),
    api_route("/api/v1/agents/renew", POST=agents_api.renew),
    api_route("/.well-known/jwks.json", GET=agents_api.jwks),
]

# Relative to /api/v1/admin; every one behind the admin guard.
ADMIN_ROUTES = [
    api_route("/registration-tokens", POST=admin_api.create_registration_token,
              GET=admin_api.list_registration_tokens),
    api_route("/registration-tokens/{token_id}", DELETE=admin_api.revoke_registration_token),
    api_route("/agents", GET=admin_api.list_agents),
    api_route("/agents/{agent_id}", GET=admin_api.get_agent, DELETE=admin_api.revoke_agent),
]


def create_app(settings: Settings) -> Starlette:
    settings.require("database_url", "admin_token", "jwt_private_key_file")
    db = Db(postgres_url(settings.database_url), max_size=settings.db_pool_max)
    metrics = Metrics("auth")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await db.connect()
        _log.info("service_started")
        try:
            yield
        finally:
            await db.disconnect()
            _log.info("service_stopped")

    app = Starlette(
        routes=[*AGENT_ROUTES, admin_mount(ADMIN_ROUTES, settings.admin_token),
                *health_routes(SchemaCheck(db), metrics)],
        middleware=[Middleware(ServiceMiddleware, metrics=metrics, component="auth")],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    # Nothing under /api/ redirects: a trailing slash is a 404, not a 307 to our own address.
    app.router.redirect_slashes = False
    storage = make_storage(settings.rate_limit_storage)
    state = app.state
    state.settings = settings
    state.db = db
    state.signer = Signer.from_file(settings.jwt_private_key_file, settings.jwt_issuer,
                                    settings.jwt_audience, settings.access_token_ttl_s)
    state.registration_limit = RateLimit("agent_registration", settings.registration_rate_limit, storage)
    state.renew_limit = RateLimit("agent_renew", settings.renew_rate_limit, storage)
    state.root_key_sha256 = (root_key_sha256(settings.command_root_public_key)
                             if settings.command_root_public_key else None)
    return app
