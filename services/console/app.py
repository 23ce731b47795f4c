"""The console: the operators' web pages under /console/, served through the gateway.

A client of the admin API only (api.py): no database, no signing key. Pages are rendered
on the server (Jinja2); live progress arrives as server-sent events (events.py) and one
small script (static/console.js) applies them. Every response carries a strict CSP and
no-store (security.py). Sessions are auth's, in PostgreSQL (sessions.py): this process keeps
none, so it restarts or runs beside a second replica without signing anyone out."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from fleetline import statuses
from fleetline.ethos import Log
from fleetline.http import Metrics
from fleetline.settings import Settings, SettingsError
from fleetline.transport import InsecureTransport, check_url
from services.common.http import ServiceMiddleware, health_routes
from services.common.ratelimit import RateLimit, make_storage
from services.console import (
    events,
    job_pages,
    oidc_flow,
    operator_pages,
    pages,
    schedule_pages,
    signin,
    webhook_pages,
)
from services.console.api import AdminApi, BrowserAddress
from services.console.oidc_flow import OidcClient
from services.console.security import SecurityHeaders
from services.console.sessions import Sessions
from services.console.web import error_page

HERE = Path(__file__).parent
_log = Log("console", "lifecycle")


@dataclass
class Console:
    settings: Settings
    api: AdminApi
    sessions: Sessions
    templates: Jinja2Templates
    sign_in_limit: RateLimit  # failed sign-ins per browser address
    oidc: OidcClient | None   # single sign-on, when configured


def page(path: str, GET=None, POST=None) -> Route:
    """A route with exactly the methods given (no HEAD added for a POST-only form)."""
    methods = [m for m, h in (("GET", GET), ("POST", POST)) if h]
    handlers = {m: h for m, h in (("GET", GET), ("POST", POST)) if h}

    async def endpoint(request: Request) -> Response:
        return await handlers[request.method](request)

    return Route(path, endpoint if len(handlers) > 1 else next(iter(handlers.values())), methods=methods)


async def _to_slash(request: Request) -> Response:
    return RedirectResponse("console/", status_code=308)  # relative: stays on this host


ROUTES = [
    page("/console", GET=_to_slash),
    page("/console/", GET=pages.home),
    page("/console/sign-in", GET=signin.sign_in_form, POST=signin.sign_in),
    page("/console/sign-in/oidc", GET=oidc_flow.start),
    page("/console/sign-in/oidc/callback", GET=oidc_flow.callback),
    page("/console/sign-out", POST=signin.sign_out),
    page("/console/tokens", GET=operator_pages.tokens),
    page("/console/operators", GET=operator_pages.operators, POST=operator_pages.create_operator),
    page("/console/operators/{operator_id}", GET=operator_pages.operator, POST=operator_pages.update_operator),
    page("/console/operators/{operator_id}/tokens", POST=operator_pages.create_token),
    page("/console/operator-tokens/{token_id}/revoke", POST=operator_pages.revoke_token),
    page("/console/audit", GET=operator_pages.audit),
    page("/console/agents", GET=pages.agents),
    page("/console/agents/{agent_id}", GET=pages.agent),
    page("/console/agents/{agent_id}/commands", POST=pages.queue_command),
    page("/console/agents/{agent_id}/revoke", POST=pages.revoke_agent),
    page("/console/agents/{agent_id}/labels", POST=pages.label_agent),
    page("/console/releases", GET=pages.releases),
    page("/console/webhooks", GET=webhook_pages.webhooks),
    page("/console/webhooks/{webhook_id}", GET=webhook_pages.webhook),
    page("/console/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", POST=webhook_pages.retry),
    page("/console/commands", GET=pages.commands),
    page("/console/commands/{command_id}", GET=pages.command),
    page("/console/commands/{command_id}/cancel", POST=pages.cancel_command),
    page("/console/jobs", GET=job_pages.jobs, POST=job_pages.create_job),
    page("/console/jobs/{job_id}", GET=job_pages.job),
    page("/console/where-preview", GET=job_pages.where_preview),
    page("/console/jobs/{job_id}/cancel", POST=job_pages.cancel_job),
    page("/console/jobs/{job_id}/approve", POST=job_pages.approve_job),
    page("/console/jobs/{job_id}/deny", POST=job_pages.deny_job),
    page("/console/commands/{command_id}/approve", POST=job_pages.approve_command),
    page("/console/commands/{command_id}/deny", POST=job_pages.deny_command),
    page("/console/schedules", GET=schedule_pages.schedules, POST=schedule_pages.create_schedule),
    page("/console/schedules/{schedule_id}", GET=schedule_pages.schedule),
    page("/console/schedules/{schedule_id}/pause", POST=schedule_pages.pause),
    page("/console/schedules/{schedule_id}/resume", POST=schedule_pages.resume),
    page("/console/schedules/{schedule_id}/run-now", POST=schedule_pages.run_now),
    page("/console/schedules/{schedule_id}/delete", POST=schedule_pages.delete),
    page("/console/schedules/{schedule_id}/approve", POST=schedule_pages.approve_schedule),
    page("/console/schedules/{schedule_id}/deny", POST=schedule_pages.deny_schedule),
    page("/console/events/jobs", GET=events.jobs_events),
    page("/console/events/jobs/{job_id}", GET=events.job_events),
    page("/console/events/agents/{agent_id}", GET=events.agent_events),
    page("/console/events/audit", GET=events.audit_events),
    page("/console/events/commands/{command_id}/output", GET=events.output_events),
    Mount("/console/static", StaticFiles(directory=HERE / "static"), name="static"),
]


def when(stamp: str | None) -> str:
    """An API timestamp as a page shows it: to the second, in UTC."""
    return f"{stamp[:19].replace('T', ' ')} UTC" if stamp else "-"


HTTP_ERRORS = {404: "No such page.", 405: "This page does not take that method."}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_page(request, exc.status_code, HTTP_ERRORS[exc.status_code])


def create_app(settings: Settings) -> Starlette:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["when"] = when
    templates.env.filters["shown"] = statuses.shown  # "cancelling..." as the CLI says it
    # Operators' tokens go to the gateway: never over plain HTTP to a remote address unless a
    # private network is declared (FLEETLINE_ALLOW_PLAINTEXT), and over TLS verified.
    try:
        check_url(settings.console_api_url, allow_plaintext=settings.allow_plaintext)
    except InsecureTransport as exc:
        raise SettingsError(f"FLEETLINE_CONSOLE_API_URL: {exc}") from None
    api = AdminApi(settings.console_api_url, settings.ca_file, settings.console_proxy_secret)
    oidc = None
    if settings.oidc_issuer and settings.oidc_client_id:
        if not settings.console_public_url:
            raise SettingsError("FLEETLINE_CONSOLE_PUBLIC_URL: required with FLEETLINE_OIDC_ISSUER (the provider "
                                "sends browsers back to it)")
        try:  # the client secret and codes go there: TLS, unless on this machine
            check_url(settings.oidc_issuer, allow_plaintext=settings.allow_plaintext)
        except InsecureTransport as exc:
            raise SettingsError(f"FLEETLINE_OIDC_ISSUER: {exc}") from None
        oidc = OidcClient(settings.oidc_issuer, settings.oidc_client_id, settings.oidc_client_secret,
                          settings.console_public_url, settings.ca_file, settings.oidc_token_auth_method)
    console = Console(settings, api, Sessions(api), templates,
                      RateLimit("console_sign_in", settings.sign_in_rate_limit,
                                make_storage(settings.rate_limit_storage)), oidc)
    metrics = Metrics("console")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        _log.info("service_started", api=settings.console_api_url)
        try:
            yield
        finally:
            await console.api.close()
            if console.oidc is not None:
                await console.oidc.close()
            _log.info("service_stopped")

    async def ready() -> bool:
        return True  # no dependency of its own: the API's health is the gateway's to report

    app = Starlette(
        routes=[*health_routes(ready, metrics), *ROUTES],
        middleware=[Middleware(SecurityHeaders), Middleware(ServiceMiddleware, metrics=metrics, component="console"),
                    Middleware(BrowserAddress, trusted_proxies=settings.trusted_proxies)],
        exception_handlers={code: _http_error for code in HTTP_ERRORS},
        lifespan=lifespan,
    )
    app.state.console = console
    app.router.redirect_slashes = False
    return app
