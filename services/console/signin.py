"""Signing in (the admin token, once) and out. The session cookie holds a random id only.

The sign-in form has its own CSRF token in a short-lived cookie (no session exists yet),
so another site cannot sign a browser in to an operator's console of its choosing."""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response

from fleetline.ethos import Log
from services.console.api import Unavailable
from services.console.security import cookie_attributes, over_https
from services.console.sessions import COOKIE, Session, same_secret
from services.console.web import BadForm, error_page, form_action, read_form, redirect, render

SIGN_IN_COOKIE = "fleetline_sign_in"
SIGN_IN_FORM_S = 600
_log = Log("console", "sessions")


def _secure(request: Request) -> bool:
    console = request.app.state.console
    peer = request.client.host if request.client else None
    return over_https(request.url.scheme, request.headers.get("x-forwarded-proto"), peer,
                      console.settings.trusted_proxies)


async def sign_in_form(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "sign_in.html", status_code, sign_in_csrf=token, error=error)
    response.set_cookie(SIGN_IN_COOKIE, token, **cookie_attributes(_secure(request), SIGN_IN_FORM_S))
    return response


async def sign_in(request: Request) -> Response:
    console = request.app.state.console
    try:
        form = await read_form(request)
    except BadForm as exc:
        return error_page(request, 400, str(exc))
    if not same_secret(form.get("csrf"), request.cookies.get(SIGN_IN_COOKIE) or "\x00"):
        return await sign_in_form(request, "The sign-in form expired; please try again.", 403)
    token = form.get("admin_token", "").strip()
    try:
        works = bool(token) and await console.api.token_works(token)
    except Unavailable as exc:
        return await sign_in_form(request, f"The fleet cannot be reached: {exc}", 502)
    if not works:
        _log.warning("sign_in_refused", client=request.client.host if request.client else None)
        return await sign_in_form(request, "That admin token was not accepted.", 401)
    session_id, _ = console.sessions.open(token)
    _log.info("signed_in", client=request.client.host if request.client else None)
    response = redirect(request, "agents")
    response.set_cookie(COOKIE, session_id, **cookie_attributes(_secure(request), console.sessions.length_s))
    response.delete_cookie(SIGN_IN_COOKIE, path="/console")
    return response


@form_action
async def sign_out(request: Request, session: Session, form: dict[str, str]) -> Response:
    request.app.state.console.sessions.close(request.cookies.get(COOKIE))
    _log.info("signed_out")
    response = redirect(request, "sign-in")
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return response
