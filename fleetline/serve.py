"""Run a service (or the gateway) under uvicorn with ETHOS logging: `python -m services.auth --port N`.

No proxy headers are believed by uvicorn and it adds no Server/Date headers (behind the
gateway they would appear twice)."""

from __future__ import annotations

import argparse
import resource
import sys
from typing import Callable

import uvicorn
from starlette.types import ASGIApp

from fleetline import ethos
from fleetline.settings import Settings, SettingsError


def serve(name: str, create_app: Callable[[Settings], ASGIApp], argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"fleetline-{name}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        settings.check_keepalive_order()
        ethos.configure(settings.log_level)
        app = create_app(settings)
    except (SettingsError, OSError, ValueError) as exc:
        sys.stderr.write(f"[ERROR] [{name}] [config] invalid_configuration {ethos.format_fields({'error': exc})}\n")
        raise SystemExit(2) from None
    _raise_file_limit()
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
        timeout_keep_alive=settings.keepalive_s,
        backlog=settings.backlog,  # a fleet reconnecting at once must not find the queue full
    )


def _raise_file_limit() -> None:
    """Every held poll is an open socket (two through the gateway): use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
