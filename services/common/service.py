"""Assembling a service app: settings, database, rate-limit storage, middleware, health."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from services.common.db import Db, asyncpg_url
from services.common.errors import EXCEPTION_HANDLERS
from services.common.ethos import Log
from services.common.http import Metrics, ServiceMiddleware, health_routes
from services.common.ratelimit import make_storage
from services.common.settings import Settings
from services.common.tokens import admin_check

Hook = Callable[[Starlette], Awaitable[None]]


def build_service(
    name: str,
    settings: Settings,
    routes: list[BaseRoute],
    *,
    db_server_settings: dict[str, str] | None = None,
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
) -> Starlette:
    settings.require("database_url", "admin_token")
    metrics = Metrics(name)
    db = Db(asyncpg_url(settings.database_url), max_size=settings.db_pool_max,
            server_settings=db_server_settings)
    log = Log(name, "lifecycle")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await db.connect()
        if on_start:
            await on_start(app)
        log.info("service_started", service=name)
        try:
            yield
        finally:
            if on_stop:
                await on_stop(app)
            await db.disconnect()
            log.info("service_stopped", service=name)

    async def ready() -> bool:
        return await db.ping()

    app = Starlette(
        routes=[*routes, *health_routes(ready, metrics)],
        middleware=[Middleware(ServiceMiddleware, metrics=metrics, component=name)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    state: Any = app.state
    state.settings = settings
    state.db = db
    state.metrics = metrics
    state.rate_limit_storage = make_storage(settings.rate_limit_storage)
    state.admin_check = admin_check(hashlib.sha256(settings.admin_token.encode()).digest())
    return app
