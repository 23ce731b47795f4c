"""The headers every console response carries, and the session cookie's attributes.

The CSP allows scripts, styles, images and event streams from the console itself only,
and no inline script or style at all (progress bars are SVG attributes, not style)."""

from __future__ import annotations

from typing import Any

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")

HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
]
_NAMES = {name for name, _ in HEADERS}


class SecurityHeaders:
    """Pure ASGI (it must not buffer the event streams)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _NAMES]
                message = {**message, "headers": kept + HEADERS}
            await send(message)

        await self.app(scope, receive, with_headers)


def cookie_attributes(secure: bool, max_age: int) -> dict:
    """What Starlette's set_cookie takes: HttpOnly, SameSite=Strict, Path=/console, Secure
    over HTTPS, and gone after max_age seconds."""
    return {"httponly": True, "samesite": "strict", "path": "/console", "secure": secure,
            "max_age": max_age}


def over_https(scheme: str, forwarded_proto: str | None, peer: str | None,
               trusted_proxies: tuple[str, ...]) -> bool:
    """Whether the browser reached us over HTTPS: our own scheme, or the gateway's
    X-Forwarded-Proto when the gateway is a proxy we trust."""
    if scheme == "https":
        return True
    return peer in trusted_proxies and (forwarded_proto or "").lower() == "https"
