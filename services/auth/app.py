"""The auth service: enrolment (registration, renewal, revocation), the JWKS, registration
tokens, agents, operators and their tokens, console sign-in, and the audit trail."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from fleetline.ethos import Log
from fleetline.http import Metrics
from fleetline.settings import Settings, SettingsError, postgres_url
from fleetline.signing import root_key_sha256
from fleetline.transport import InsecureTransport, check_url
from services.auth import admin_api, agents_api, operators_api
from services.auth.api_errors import EXCEPTION_HANDLERS
from services.auth.keys import Signer
from services.auth.oidc import OidcVerifier
from services.auth.pruner import AuthPruner
from services.auth.state import Auth
from services.common.admin import Access, admin_mount
from services.common.db import OPERATOR_CHANNEL, Db
from services.common.http import ServiceMiddleware, api_route, health_routes
from services.common.notifications import Notifications
from services.common.operators import ADMIN, OPERATOR, VIEWER, OperatorAuth, TokenUse
from services.common.ratelimit import RateLimit, make_storage
from services.common.readiness import SchemaCheck

_log = Log("auth", "lifecycle")

AGENT_ROUTES = [
    api_route("/api/v1/agents/register", POST=agents_api.register),
    api_route("/api/v1/agents/renew", POST=agents_api.renew),
    api_route("/.well-known/jwks.json", GET=agents_api.jwks),
]

# Console sign-in: no operator yet (rate limited per name and per address instead).
OPERATOR_ROUTES = [
    api_route("/api/v1/operators/sign-in", POST=operators_api.sign_in),
    api_route("/api/v1/operators/sign-in/oidc-nonce", POST=operators_api.oidc_nonce),
]

# Relative to /api/v1/admin; every one behind the admin guard, with its line in ACCESS.
ADMIN_ROUTES = [
    api_route("/registration-tokens", POST=admin_api.create_registration_token,
              GET=admin_api.list_registration_tokens),
    api_route("/registration-tokens/{token_id}", DELETE=admin_api.revoke_registration_token),
    api_route("/agents", GET=admin_api.list_agents),
    api_route("/agents/{agent_id}", GET=admin_api.get_agent, PATCH=admin_api.label_agent,
              DELETE=admin_api.revoke_agent),
    api_route("/agents/{agent_id}/refresh-facts", POST=admin_api.refresh_facts),
    api_route("/whoami", GET=operators_api.whoami),
    api_route("/operators", POST=operators_api.create_operator, GET=operators_api.list_operators),
    api_route("/operators/{operator_id}", GET=operators_api.get_operator, PATCH=operators_api.update_operator),
    api_route("/operators/{operator_id}/tokens", POST=operators_api.create_token, GET=operators_api.list_tokens),
    api_route("/operator-tokens/{token_id}", DELETE=operators_api.revoke_token),
    api_route("/sign-out", POST=operators_api.sign_out),
    api_route("/audit", GET=operators_api.list_audit),
]

# Who may call each admin route: the least role, and the action its audit events name. An
# operator manages its own tokens (the operation checks it is its own, or an admin asks).
ACCESS = {
    "POST /registration-tokens": Access(ADMIN, "registration_token.create"),
    "GET /registration-tokens": Access(ADMIN, "registration_token.list"),
    "DELETE /registration-tokens/{token_id}": Access(ADMIN, "registration_token.revoke"),
    "GET /agents": Access(VIEWER, "agent.list"),
    "GET /agents/{agent_id}": Access(VIEWER, "agent.read"),
    "DELETE /agents/{agent_id}": Access(ADMIN, "agent.revoke"),
    "PATCH /agents/{agent_id}": Access(OPERATOR, "agent.label"),
    "POST /agents/{agent_id}/refresh-facts": Access(OPERATOR, "agent.refresh_facts"),
    "GET /whoami": Access(VIEWER, "operator.whoami"),
    "POST /operators": Access(ADMIN, "operator.create"),
    "GET /operators": Access(ADMIN, "operator.list"),
    "GET /operators/{operator_id}": Access(ADMIN, "operator.read"),
    "PATCH /operators/{operator_id}": Access(ADMIN, "operator.update"),
    "POST /operators/{operator_id}/tokens": Access(VIEWER, "operator_token.create"),
    "GET /operators/{operator_id}/tokens": Access(VIEWER, "operator_token.list"),
    "DELETE /operator-tokens/{token_id}": Access(VIEWER, "operator_token.revoke"),
    "POST /sign-out": Access(VIEWER, "console.sign_out"),
    "GET /audit": Access(ADMIN, "audit.list"),
}


def create_app(settings: Settings) -> Starlette:
    settings.require("database_url", "jwt_private_key_file")
    database_url = postgres_url(settings.needed("database_url"))
    db = Db(database_url, max_size=settings.db_pool_max)
    metrics = Metrics("auth")
    token_use = TokenUse(db, component="auth")
    operator_auth = OperatorAuth(db, settings.admin_token, token_use, listening=lambda: notifications.listening)

    async def forget_operators(_conn) -> None:  # changes made while not listening went unheard
        operator_auth.changed()

    notifications = Notifications(database_url, {OPERATOR_CHANNEL: operator_auth.changed},
                                  restored=forget_operators, component="auth")
    pruner = AuthPruner(db, settings.prune_interval_s, settings.retention_days)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await db.connect()
        await notifications.start()
        token_use.start()
        pruner.start()
        _log.info("service_started")
        try:
            yield
        finally:
            await pruner.stop()
            await token_use.stop()
            await notifications.stop()
            await db.disconnect()
            _log.info("service_stopped")

    app = Starlette(
        routes=[*AGENT_ROUTES, *OPERATOR_ROUTES,
                admin_mount(ADMIN_ROUTES, ACCESS, operator_auth, settings.trusted_proxies),
                *health_routes(SchemaCheck(db), metrics)],
        middleware=[Middleware(ServiceMiddleware, metrics=metrics, component="auth")],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    # Nothing under /api/ redirects: a trailing slash is a 404, not a 307 to our own address.
    app.router.redirect_slashes = False
    storage = make_storage(settings.rate_limit_storage)
    oidc = None
    if settings.oidc_issuer and settings.oidc_client_id:
        try:  # the keys ID tokens are checked against come from there: TLS, unless on this machine
            check_url(settings.oidc_issuer, allow_plaintext=settings.allow_plaintext)
        except InsecureTransport as exc:
            raise SettingsError(f"FLEETLINE_OIDC_ISSUER: {exc}") from None
        oidc = OidcVerifier(settings.oidc_issuer, settings.oidc_client_id, settings.ca_file)
    app.state.service = Auth(
        settings=settings, db=db,
        signer=Signer.from_file(settings.needed("jwt_private_key_file"), settings.jwt_issuer, settings.jwt_audience,
                                settings.access_token_ttl_s),
        registration_limit=RateLimit("agent_registration", settings.registration_rate_limit, storage),
        registration_failures=RateLimit("agent_registration_failures", settings.registration_failure_limit,
                                        storage),
        renew_limit=RateLimit("agent_renew", settings.renew_rate_limit, storage),
        renew_failures=RateLimit("agent_renew_failures", settings.renew_failure_limit, storage),
        root_key_sha256=(root_key_sha256(settings.command_root_public_key)
                         if settings.command_root_public_key else None),
        operator_auth=operator_auth,
        sign_in_limit=RateLimit("operator_sign_in", settings.sign_in_rate_limit, storage),
        oidc_nonce_limit=RateLimit("operator_oidc_nonce", settings.sign_in_rate_limit, storage),
        oidc=oidc,
    )
    return app
