"""Run a service (or the gateway) under uvicorn with ETHOS logging: `python -m services.auth --port N`.

No proxy headers are believed by uvicorn and it adds no Server/Date headers (behind the
gateway they would appear twice)."""

from __future__ import annotations

import argparse
import resource
import sys
from typing import Any, Awaitable, Callable, TypeVar, cast

import uvicorn

from fleetline import ethos
from fleetline.settings import Settings, SettingsError

# An ASGI application: a Starlette app, or the gateway (a hand-written ASGI class).
App = TypeVar("App", bound=Callable[..., Awaitable[Any]])

def serve(name: str, create_app: Callable[[Settings], App], argv: list[str] | None = None,
          options: Callable[[Settings, App, str], dict] | None = None) -> None:
    """`options(settings, app, host)`: more uvicorn settings (the gateway's edge), or a
    SettingsError that stops the start."""
    parser = argparse.ArgumentParser(prog=f"fleetline-{name}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        settings.check_keepalive_order()
        ethos.configure(settings.log_level)
        app = create_app(settings)
        extra = options(settings, app, args.host) if options else {}
    except (SettingsError, OSError, ValueError) as exc:
        sys.stderr.write(f"[ERROR] [{name}] [config] invalid_configuration {ethos.format_fields({'error': exc})}\n")
        raise SystemExit(2) from None
    raise_file_limit()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        # X-Forwarded-For is interpreted by client_address(), against trusted proxies only.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=5,
        # A float works (uvicorn hands it to loop.call_later); its annotation says int.
        timeout_keep_alive=cast(int, settings.keepalive_s),
        backlog=settings.backlog,  # a fleet reconnecting at once must not find the queue full
        **extra,
    )


def raise_file_limit(wanted: int = 65536) -> int:
    """Every held poll is an open socket (two in the gateway): as many as allowed, up to
    `wanted` (root may raise the hard limit too). Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(wanted, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return limit
        except (ValueError, OSError):
            continue
    return soft
