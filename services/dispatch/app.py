"""The dispatch service: the poll (claiming), ack and results, the reaper, command admin."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from services.common.db import asyncpg_url
from services.common.ratelimit import RateLimit
from services.common.service import build_service
from services.common.settings import Settings, SettingsError
from services.common.tokens import AccessTokenVerifier, KeySet
from services.dispatch import admin_api, agent_api
from services.dispatch.last_seen import LastSeen
from services.dispatch.reaper import Reaper
from services.dispatch.wakeups import Wakeups

ROUTES = [
    Route("/api/v1/agents/{agent_id}/commands", agent_api.poll, methods=["GET"]),
    Route("/api/v1/agents/{agent_id}/commands/{command_id}/ack", agent_api.ack, methods=["POST"]),
    Route("/api/v1/agents/{agent_id}/commands/{command_id}/result", agent_api.result,
          methods=["POST"]),
    Route("/api/v1/admin/commands", admin_api.create_command, methods=["POST"]),
    Route("/api/v1/admin/commands", admin_api.list_commands, methods=["GET"]),
    Route("/api/v1/admin/commands/{command_id}", admin_api.get_command, methods=["GET"]),
    Route("/api/v1/admin/commands/{command_id}/cancel", admin_api.cancel_command,
          methods=["POST"]),
]

# Pinned plans for dispatch's connections:
# - plan_cache_mode=force_generic_plan: every statement here is prepared once per
#   connection (asyncpg). Under `auto`, PostgreSQL switched the claim to custom plans after a
#   busy period and then re-planned that CTE on every poll: empty polls fell from ~3,300/s
#   to ~1,800/s until the connections were replaced (measured, bench/dispatch_bench.py).
#   Statements are written so their generic plan is the right one (no `$1 IS NULL OR ...`).
# - enable_bitmapscan=off: the planner may pick a bitmap scan + sort for an agent whose
#   backlog its statistics do not know yet (32 claims/s instead of 1,400 at 50k, DESIGN.md).
# tests/test_dispatch_internals.py checks both plans that matter.
DB_SETTINGS = {"enable_bitmapscan": "off", "plan_cache_mode": "force_generic_plan"}


def create_app(settings: Settings) -> Starlette:
    if not (settings.jwks_url or settings.jwt_public_key_file):
        raise SettingsError("required setting missing: FLEETLINE_JWKS_URL or FLEETLINE_JWT_PUBLIC_KEY_FILE")

    async def on_start(app: Starlette) -> None:
        await app.state.keys.refresh(force=True)
        await app.state.wakeups.start()
        app.state.reaper.start()
        app.state.last_seen.start()

    async def on_stop(app: Starlette) -> None:
        await app.state.reaper.stop()
        await app.state.last_seen.stop()
        await app.state.wakeups.stop()

    app = build_service("dispatch", settings, ROUTES, db_server_settings=DB_SETTINGS,
                        on_start=on_start, on_stop=on_stop)
    state = app.state
    state.keys = KeySet(settings.jwks_url, settings.jwt_public_key_file)
    state.verifier = AccessTokenVerifier(state.keys, settings.jwt_issuer, settings.jwt_audience)
    storage = state.rate_limit_storage
    state.checkin_limit = RateLimit("agent_checkin", settings.checkin_rate_limit, storage)
    state.report_limit = RateLimit("agent_report", settings.report_rate_limit, storage)
    state.reaper = Reaper(state.db, settings.reaper_interval_s)
    state.last_seen = LastSeen(state.db, settings.last_seen_flush_s)
    state.wakeups = Wakeups(asyncpg_url(settings.database_url))
    state.claimed_total = state.metrics.counter("fleetline_commands_claimed_total",
                                                "Commands handed to agents by the poll")
    return app
