"""The dispatch service: the poll (claiming), ack and results, the reaper, command admin."""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from fleetline.ethos import Log
from fleetline.http import Metrics
from fleetline.settings import Settings, SettingsError, postgres_url
from services.common.admin import Access, admin_mount
from services.common.db import Db
from services.common.http import ServiceMiddleware, api_route, health_routes
from services.common.operators import ADMIN, OPERATOR, VIEWER, OperatorAuth, TokenUse
from services.common.periodic import Periodic
from services.common.ratelimit import RateLimit, make_storage
from services.common.readiness import SchemaCheck
from services.common.tokens import AccessTokenVerifier, KeySet
from services.dispatch.admin import approvals_api, jobs_api, schedules_api
from services.dispatch.admin import commands_api as admin_api
from services.dispatch.agents import api as agent_api
from services.dispatch.agents.first_use import FirstUse
from services.dispatch.agents.last_seen import LastSeen
from services.dispatch.agents.long_poll import LongPolls
from services.dispatch.api_errors import EXCEPTION_HANDLERS
from services.dispatch.lifecycle import approvals
from services.dispatch.lifecycle.approval_policy import PolicyCache
from services.dispatch.lifecycle.commands import PollPolicy
from services.dispatch.lifecycle.materialiser import Materialiser
from services.dispatch.lifecycle.reaper import Reaper
from services.dispatch.lifecycle.revocations import Revocations
from services.dispatch.lifecycle.ticker import Ticker
from services.dispatch.output.followers import Followers
from services.dispatch.releases import api as releases_api
from services.dispatch.retention.pruner import Pruner
from services.dispatch.signing import keysets
from services.dispatch.signing.signer import CommandSigner, read_keyset
from services.dispatch.state import Dispatch
from services.dispatch.wakeups.lease_sweep import LeaseSweep
from services.dispatch.wakeups.listener import Listener
from services.dispatch.wakeups.waiters import Waiters
from services.dispatch.webhooks import api as webhooks_api
from services.dispatch.webhooks.presence import PresenceSweep
from services.dispatch.webhooks.sender import Sender

_log = Log("dispatch", "lifecycle")

AGENT_ROUTES = [
    api_route("/api/v1/agents/keyset", GET=agent_api.keyset),
    api_route("/api/v1/agents/{agent_id}/commands", GET=agent_api.poll),
    api_route("/api/v1/agents/{agent_id}/commands/{command_id}/ack", POST=agent_api.ack),
    api_route("/api/v1/agents/{agent_id}/commands/{command_id}/result", POST=agent_api.result),
    api_route("/api/v1/agents/{agent_id}/commands/{command_id}/output", POST=agent_api.append_output),
    api_route("/api/v1/agents/{agent_id}/facts", PUT=agent_api.put_facts),
    # No authentication (releases are not secrets); rate limited per address.
    api_route("/api/v1/agent-releases/{version}/{platform}", GET=releases_api.download),
]

# Relative to /api/v1/admin; every one behind the admin guard, with its line in ACCESS.
ADMIN_ROUTES = [
    api_route("/commands", POST=admin_api.create_command, GET=admin_api.list_commands),
    api_route("/commands/{command_id}", GET=admin_api.get_command),
    api_route("/commands/{command_id}/output", GET=admin_api.command_output),
    api_route("/commands/{command_id}/cancel", POST=admin_api.cancel_command),
    api_route("/command-keyset", PUT=admin_api.install_keyset),
    api_route("/jobs", POST=jobs_api.create_job, GET=jobs_api.list_jobs),
    api_route("/jobs/{job_id}", GET=jobs_api.get_job),
    api_route("/jobs/{job_id}/targets", GET=jobs_api.list_targets),
    api_route("/jobs/{job_id}/cancel", POST=jobs_api.cancel_job),
    api_route("/jobs/{job_id}/approve", POST=approvals_api.approve_job),
    api_route("/jobs/{job_id}/deny", POST=approvals_api.deny_job),
    api_route("/commands/{command_id}/approve", POST=approvals_api.approve_command),
    api_route("/commands/{command_id}/deny", POST=approvals_api.deny_command),
    api_route("/approval-policy", GET=approvals_api.get_policy, PUT=approvals_api.set_policy),
    api_route("/schedules", POST=schedules_api.create_schedule, GET=schedules_api.list_schedules),
    api_route("/schedules/{schedule_id}", GET=schedules_api.get_schedule, PATCH=schedules_api.update_schedule,
              DELETE=schedules_api.delete_schedule),
    api_route("/schedules/{schedule_id}/runs", GET=schedules_api.list_runs),
    api_route("/schedules/{schedule_id}/run-now", POST=schedules_api.run_now),
    api_route("/schedules/{schedule_id}/approve", POST=schedules_api.approve_schedule),
    api_route("/schedules/{schedule_id}/deny", POST=schedules_api.deny_schedule),
    api_route("/agent-releases", POST=releases_api.upload, GET=releases_api.list_releases),
    api_route("/agent-releases/{version}/{platform}", DELETE=releases_api.delete),
    api_route("/webhooks", POST=webhooks_api.create, GET=webhooks_api.list_endpoints),
    api_route("/webhooks/{webhook_id}", GET=webhooks_api.get_endpoint, PATCH=webhooks_api.update,
              DELETE=webhooks_api.delete),
    api_route("/webhooks/{webhook_id}/deliveries", GET=webhooks_api.deliveries),
    api_route("/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", POST=webhooks_api.retry),
]

# Who may call each admin route: the least role, and the action its audit events name.
# Scopes narrow further inside the operations (commands.py, jobs.py).
ACCESS = {
    "POST /commands": Access(OPERATOR, "command.create"),
    "GET /commands": Access(VIEWER, "command.list"),
    "GET /commands/{command_id}": Access(VIEWER, "command.read"),
    "GET /commands/{command_id}/output": Access(VIEWER, "command.output"),
    "POST /commands/{command_id}/cancel": Access(OPERATOR, "command.cancel"),
    "PUT /command-keyset": Access(ADMIN, "keyset.install"),
    "POST /jobs": Access(OPERATOR, "job.create"),
    "GET /jobs": Access(VIEWER, "job.list"),
    "GET /jobs/{job_id}": Access(VIEWER, "job.read"),
    "GET /jobs/{job_id}/targets": Access(VIEWER, "job.targets"),
    "POST /jobs/{job_id}/cancel": Access(OPERATOR, "job.cancel"),
    "POST /jobs/{job_id}/approve": Access(OPERATOR, "job.approve"),
    "POST /jobs/{job_id}/deny": Access(OPERATOR, "job.deny"),
    "POST /commands/{command_id}/approve": Access(OPERATOR, "command.approve"),
    "POST /commands/{command_id}/deny": Access(OPERATOR, "command.deny"),
    "GET /approval-policy": Access(ADMIN, "approval_policy.read"),
    "PUT /approval-policy": Access(ADMIN, "approval_policy.update"),
    "POST /schedules": Access(OPERATOR, "schedule.create"),
    "GET /schedules": Access(VIEWER, "schedule.list"),
    "GET /schedules/{schedule_id}": Access(VIEWER, "schedule.read"),
    "PATCH /schedules/{schedule_id}": Access(OPERATOR, "schedule.update"),
    "DELETE /schedules/{schedule_id}": Access(OPERATOR, "schedule.delete"),
    "GET /schedules/{schedule_id}/runs": Access(VIEWER, "schedule.runs"),
    "POST /schedules/{schedule_id}/run-now": Access(OPERATOR, "schedule.run_now"),
    "POST /schedules/{schedule_id}/approve": Access(OPERATOR, "schedule.approve"),
    "POST /schedules/{schedule_id}/deny": Access(OPERATOR, "schedule.deny"),
    "POST /agent-releases": Access(ADMIN, "release.upload"),
    "GET /agent-releases": Access(VIEWER, "release.list"),
    "DELETE /agent-releases/{version}/{platform}": Access(ADMIN, "release.delete"),
    "POST /webhooks": Access(ADMIN, "webhook.create"),
    "GET /webhooks": Access(ADMIN, "webhook.list"),
    "GET /webhooks/{webhook_id}": Access(ADMIN, "webhook.read"),
    "PATCH /webhooks/{webhook_id}": Access(ADMIN, "webhook.update"),
    "DELETE /webhooks/{webhook_id}": Access(ADMIN, "webhook.delete"),
    "GET /webhooks/{webhook_id}/deliveries": Access(ADMIN, "webhook.deliveries"),
    "POST /webhooks/{webhook_id}/deliveries/{delivery_id}/retry": Access(ADMIN, "webhook.retry"),
}

# Pinned plans for dispatch's connections:
# - plan_cache_mode=force_generic_plan: every statement here is prepared once per
#   connection (asyncpg). Under `auto`, PostgreSQL switched the claim to custom plans after a
#   busy period and then re-planned that CTE on every poll: empty polls fell from ~3,300/s
#   to ~1,800/s until the connections were replaced (measured, bench/dispatch_bench.py).
#   Statements are written so their generic plan is the right one (no `$1 IS NULL OR ...`).
# - enable_bitmapscan=off: the planner may pick a bitmap scan + sort for an agent whose
#   backlog its statistics do not know yet (32 claims/s instead of 1,400 at 50k).
# tests/integration/test_dispatch_plans.py checks the plans that matter.
DB_SETTINGS = {"enable_bitmapscan": "off", "plan_cache_mode": "force_generic_plan"}


def create_app(settings: Settings) -> Starlette:
    settings.require("database_url", "command_signing_key_file", "command_root_public_key")
    if not (settings.jwks_url or settings.jwt_public_key_file):
        raise SettingsError("required setting missing: FLEETLINE_JWKS_URL or FLEETLINE_JWT_PUBLIC_KEY_FILE")
    database_url = postgres_url(settings.needed("database_url"))
    db = Db(database_url, max_size=settings.db_pool_max,
            server_settings=DB_SETTINGS)
    metrics = Metrics("dispatch")
    keys = KeySet(settings.jwks_url, settings.jwt_public_key_file)
    # Read auth's keys again on a beat, not only for an unknown kid: a retired key stops
    # verifying within one interval (the first run is the start-up fetch below).
    jwks_refresh = Periodic("jwks", settings.jwks_refresh_s, lambda: keys.refresh(force=True),
                            first_after_s=settings.jwks_refresh_s)
    waiters = Waiters()
    token_use = TokenUse(db, component="dispatch")
    operator_auth = OperatorAuth(db, settings.admin_token, token_use, listening=lambda: listener.listening)
    revocations = Revocations(db, waiters)
    followers = Followers()
    listener = Listener(database_url, waiters, revocations.revoked, followers,
                        operators_changed=operator_auth.changed,
                        deliveries_made=lambda _: webhooks.kick())  # (webhooks: below)
    pruned_total = metrics.counter("fleetline_pruned_rows_total", "Rows deleted by the retention pruner",
                                   ("table",))
    pruner = Pruner(database_url, DB_SETTINGS, settings.prune_interval_s,
                    settings.retention_days,
                    counted=lambda table, n: pruned_total.labels(table).inc(n))
    lease_sweep = LeaseSweep(db, waiters)
    reaper = Reaper(db, settings.reaper_interval_s)
    last_seen = LastSeen(db, settings.last_seen_flush_s, settings.last_seen_write_s)
    schema_ready = SchemaCheck(db)
    signer = CommandSigner(settings.needed("command_signing_key_file"))
    materialiser = Materialiser(db, signer, 1.0, settings.job_slice_targets)
    ticker = Ticker(db, signer, settings.schedule_tick_s,
                    metrics.counter("fleetline_schedule_runs_total", "Schedule runs recorded, by outcome",
                                    ("outcome",)), started=materialiser.kick)
    delivered = metrics.counter("fleetline_webhook_deliveries_total",
                                "Webhook delivery attempts, by outcome (delivered, retry, failed)", ("outcome",))
    seen = {"outbox_age": 0.0, "offline": 0.0}  # what the loops last read, for the gauges
    metrics.gauge("fleetline_webhook_outbox_oldest_seconds", "How long the oldest due webhook delivery has waited",
                  lambda: seen["outbox_age"])
    metrics.gauge("fleetline_agents_offline", "Active agents not seen within FLEETLINE_OFFLINE_AFTER_S",
                  lambda: seen["offline"])
    sender = Sender(db, settings.webhook_allow_private, settings.webhook_retry_scale,
                    counted=lambda outcome: delivered.labels(outcome).inc())

    async def send_due() -> None:
        if await sender.step():
            webhooks.kick()  # more may have come due meanwhile: look again at once
        seen["outbox_age"] = await sender.oldest_due_s()

    webhooks = Periodic("webhooks", settings.webhook_interval_s, send_due)
    presence = PresenceSweep(db, settings.offline_after(), offline=lambda n: seen.update(offline=float(n)))
    presence_sweep = Periodic("presence", settings.presence_sweep_s, presence.step)
    initial_keyset = (read_keyset(json.loads(Path(settings.command_keyset_file).read_text()),
                                  settings.needed("command_root_public_key"))
                      if settings.command_keyset_file else None)

    def listening() -> bool:  # the LISTEN connection is up: held polls hear wake-ups
        return listener.listening

    async def ready() -> bool:  # the expected schema, and LISTEN up (or held polls go deaf)
        return listener.listening and await schema_ready()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await db.connect()
        if initial_keyset is not None and await keysets.install(db, initial_keyset):
            _log.info("keyset_installed", version=initial_keyset.version, source="file")
        await keys.refresh(force=True)
        if settings.jwks_url:
            jwks_refresh.start()
        await listener.start()
        lease_sweep.start()
        reaper.start()
        pruner.start()
        materialiser.start()
        ticker.start()
        webhooks.start()
        presence_sweep.start()
        last_seen.start()
        token_use.start()
        _log.info("service_started")
        try:
            yield
        finally:
            await jwks_refresh.stop()
            await reaper.stop()
            await pruner.stop()
            await ticker.stop()
            await webhooks.stop()
            await presence_sweep.stop()
            await sender.close()
            await materialiser.stop()
            await lease_sweep.stop()
            await last_seen.stop()  # flushes what was seen since the last interval
            await token_use.stop()
            await listener.stop()
            await revocations.stop()
            await db.disconnect()
            _log.info("service_stopped")

    app = Starlette(
        routes=[*AGENT_ROUTES, admin_mount(ADMIN_ROUTES, ACCESS, operator_auth, settings.trusted_proxies),
                *health_routes(ready, metrics)],
        middleware=[Middleware(ServiceMiddleware, metrics=metrics, component="dispatch")],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    # Nothing under /api/ redirects: a trailing slash is a 404, not a 307 to our own address.
    app.router.redirect_slashes = False
    storage = make_storage(settings.rate_limit_storage)
    metrics.gauge("fleetline_held_polls", "Long polls parked in this process", waiters.held)
    metrics.gauge("fleetline_output_followers", "Readers parked on a command's output in this process",
                  followers.held)
    for table in ("commands", "jobs", "audit_events"):
        metrics.gauge(f"fleetline_retention_oldest_{table}_age_seconds",
                      f"Age of the oldest {table.replace('_', ' ')} row kept (ended, for commands and jobs), "
                      "as of the last pruning pass", functools.partial(pruner.oldest_age_s, table))
    first_use = FirstUse(db)
    metrics.gauge("fleetline_first_use_statements", "Statements this process ran to mark agents' first use "
                  "(one for all the agents seen while the previous one ran)", lambda: first_use.writes)
    polls = LongPolls(db, waiters, PollPolicy(settings.poll_interval_s, settings.rapid_poll_interval_s,
                                              settings.rapid_window_s),
                      listening,
                      metrics.counter("fleetline_commands_claimed_total", "Commands handed to agents by the poll"),
                      metrics.counter("fleetline_claim_statements_total",
                                      "Claim statements run by polls (none while parked)"))
    app.state.service = Dispatch(
        settings=settings, db=db,
        verifier=AccessTokenVerifier(keys, settings.jwt_issuer, settings.jwt_audience,
                                     max_lifetime_s=settings.access_token_ttl_s),
        checkin_limit=RateLimit("agent_checkin", settings.checkin_rate_limit, storage),
        report_limit=RateLimit("agent_report", settings.report_rate_limit, storage),
        download_limit=RateLimit("release_download", settings.release_download_rate_limit, storage),
        webhook_sender=webhooks,
        signer=signer, polls=polls, followers=followers, materialiser=materialiser, last_seen=last_seen,
        first_use=first_use, approval_policy=PolicyCache(lambda: approvals.read_policy(db)),
        output_reads=metrics.counter("fleetline_output_reads_total",
                                     "Reads of a command's output by operators (none while parked)"),
    )
    return app
