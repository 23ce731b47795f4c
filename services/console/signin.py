"""Signing in and out. An operator signs in with its name and password, or with one of its
operator tokens, or through the organisation's OpenID Connect provider (oidc_flow.py);
auth checks the credential and opens the session (the console vouches for no one). The
session cookie holds the session's id only, never a token.

The sign-in form has its own CSRF token in a short-lived cookie (no session exists yet),
so another site cannot sign a browser in to a console session of its choosing. Failed
sign-ins are limited per browser address here, and per name and per address in auth."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import Response

from fleetline.ethos import Log
from services.common.errors import ApiError
from services.common.http import client_address
from services.console.api import Refused, Unavailable
from services.console.security import cookie_attributes, over_https
from services.console.sessions import COOKIE, Session, same_secret
from services.console.web import BadForm, error_page, form_action, read_form, redirect, render

SIGN_IN_COOKIE = "fleetline_sign_in"
SIGN_IN_FORM_S = 600
_log = Log("console", "sessions")


def secure(request: Request) -> bool:
    console = request.app.state.console
    peer = request.client.host if request.client else None
    return over_https(request.url.scheme, request.headers.get("x-forwarded-proto"), peer,
                      console.settings.trusted_proxies)


def browser_address(request: Request) -> str:
    return client_address(request, request.app.state.console.settings.trusted_proxies)


async def sign_in_form(request: Request, error: str | None = None, status_code: int = 200,
                       name: str = "") -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "sign_in.html", status_code, sign_in_csrf=token, error=error, name=name,
                      oidc=request.app.state.console.oidc is not None)
    response.set_cookie(SIGN_IN_COOKIE, token, **cookie_attributes(secure(request), SIGN_IN_FORM_S))
    return response


def session_response(request: Request, opened: dict) -> Response:
    """Where a successful sign-in lands: the agents page, with the session's cookie."""
    expires = datetime.fromisoformat(opened["expires_at"])
    max_age = max(1, int((expires - datetime.now(timezone.utc)).total_seconds()))
    response = redirect(request, "agents")
    response.set_cookie(COOKIE, opened["session"], **cookie_attributes(secure(request), max_age))
    response.delete_cookie(SIGN_IN_COOKIE, path="/console")
    _log.info("signed_in", operator=opened["operator"]["name"], client=browser_address(request))
    return response


async def open_session(request: Request, body: dict) -> dict | str:
    """Auth's new session for `body`, or why there is none (a sentence for the page)."""
    console = request.app.state.console
    address = browser_address(request)
    try:
        await console.sign_in_limit.ensure_room(address)
    except ApiError as exc:
        return exc.detail
    try:
        return await console.api.sign_in({**body, "session_s": console.settings.console_session_s})
    except Unavailable as exc:
        return f"The fleet cannot be reached: {exc}"
    except Refused as exc:
        if exc.status == 401:
            await console.sign_in_limit.count(address)
            _log.warning("sign_in_refused", method=body.get("method"), client=address)
            return "Sign-in refused: those credentials were not accepted."
        return exc.body.get("detail", "Sign-in refused.")


async def sign_in(request: Request) -> Response:
    try:
        form = await read_form(request)
    except BadForm as exc:
        return error_page(request, 400, str(exc))
    if not same_secret(form.get("csrf"), request.cookies.get(SIGN_IN_COOKIE) or "\x00"):
        return await sign_in_form(request, "The sign-in form expired; please try again.", 403)
    name = form.get("name", "").strip()
    if form.get("token", "").strip():
        body = {"method": "token", "token": form["token"].strip()}
    elif name:
        body = {"method": "password", "name": name, "password": form.get("password", "")}
    else:
        return await sign_in_form(request, "Give a name and password, or an operator token.", 400)
    opened = await open_session(request, body)
    if isinstance(opened, str):
        status = 502 if opened.startswith("The fleet cannot") else 429 if "Too many" in opened else 401
        return await sign_in_form(request, opened, status, name)
    return session_response(request, opened)


@form_action
async def sign_out(request: Request, session: Session, form: dict[str, str]) -> Response:
    console = request.app.state.console
    try:
        await console.api.call(session.token, "POST", "/sign-out")
    except Refused:
        pass  # already over
    console.sessions.forget(session.token)
    _log.info("signed_out", operator=session.who["name"])
    response = redirect(request, "sign-in")
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return response
