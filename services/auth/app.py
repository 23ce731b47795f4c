"""The auth service: registration, renewal, JWKS, registration-token and agent admin."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from services.auth import admin_api, agents_api
from services.auth.keys import Signer
from services.common.ratelimit import RateLimit
from services.common.service import build_service
from services.common.settings import Settings

ROUTES = [
    Route("/api/v1/agents/register", agents_api.register, methods=["POST"]),
    Route("/api/v1/agents/renew", agents_api.renew, methods=["POST"]),
    Route("/.well-known/jwks.json", agents_api.jwks, methods=["GET"]),
    Route("/api/v1/admin/registration-tokens", admin_api.create_registration_token, methods=["POST"]),
    Route("/api/v1/admin/registration-tokens", admin_api.list_registration_tokens, methods=["GET"]),
    Route("/api/v1/admin/registration-tokens/{token_id}", admin_api.revoke_registration_token,
          methods=["DELETE"]),
    Route("/api/v1/admin/agents", admin_api.list_agents, methods=["GET"]),
    Route("/api/v1/admin/agents/{agent_id}", admin_api.get_agent, methods=["GET"]),
    Route("/api/v1/admin/agents/{agent_id}", admin_api.revoke_agent, methods=["DELETE"]),
]


def create_app(settings: Settings) -> Starlette:
    settings.require("jwt_private_key_file")
    app = build_service("auth", settings, ROUTES)
    state = app.state
    state.signer = Signer.from_file(settings.jwt_private_key_file, settings.jwt_issuer,
                                    settings.jwt_audience, settings.access_token_ttl_s)
    storage = state.rate_limit_storage
    state.registration_limit = RateLimit("agent_registration", settings.registration_rate_limit, storage)
    state.renew_limit = RateLimit("agent_renew", settings.renew_rate_limit, storage)
    return app
