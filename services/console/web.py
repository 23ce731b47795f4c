"""What every console page shares: the signed-in session, forms with their CSRF token,
relative redirects within /console/, and rendering (errors included)."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.common.validation import path_uuid
from services.console.api import Refused, Unavailable
from services.console.sessions import COOKIE, Session, same_secret

MAX_FORM_BYTES = 256 * 1024

Handler = Callable[[Request, Session], Awaitable[Response]]


class NoSuchPage(Exception):
    pass


def path_id(request: Request, name: str) -> str:
    """A path's id, which must be a UUID before it goes anywhere near an API path."""
    found = path_uuid(request, name)
    if found is None:
        raise NoSuchPage()
    return found


def relative(request: Request, target: str) -> str:
    """`target` (a path under /console/) as a location relative to this request's path:
    the console never redirects anywhere but within itself, and never to an absolute URL."""
    path = request.url.path
    if path == "/console":
        return f"console/{target}"
    depth = path.count("/") - 2  # the segments between /console/ and the last one
    return "../" * depth + target if depth > 0 else target or "./"


def redirect(request: Request, target: str) -> RedirectResponse:
    return RedirectResponse(relative(request, target), status_code=303)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    console = request.app.state.console
    session = getattr(request.state, "session", None)
    return console.templates.TemplateResponse(
        request, template, {"csrf": session.csrf if session else None, "session": session,
                            "section": (request.url.path.split("/") + ["", "", ""])[2],
                            "now": datetime.now(timezone.utc), **context},
        status_code=status_code)


def error_page(request: Request, status_code: int, detail: str) -> Response:
    return render(request, "error.html", status_code, detail=detail, status=status_code)


def signed_in(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A page for signed-in operators: anyone else is sent to sign in. API refusals are
    shown as they are; a session the API no longer accepts (signed out, ended, its operator
    disabled) is sent to sign in again."""

    @functools.wraps(handler)
    async def page(request: Request) -> Response:
        console = request.app.state.console
        session_id = request.cookies.get(COOKIE)
        try:
            session = await console.sessions.get(session_id)
            if session is None:
                return _to_sign_in(request, session_id)
            request.state.session = session
            return await handler(request, session)
        except Refused as exc:
            if exc.signed_out:
                console.sessions.forget(session_id)
                return _to_sign_in(request, session_id)
            return error_page(request, exc.status, exc.body.get("detail", "Refused."))
        except Unavailable as exc:
            return error_page(request, 502, str(exc))
        except NoSuchPage:
            return error_page(request, 404, "No such page.")

    return page


def _to_sign_in(request: Request, session_id: str | None) -> Response:
    response = redirect(request, "sign-in")
    if session_id:  # a cookie that opens nothing any more goes too
        response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return response


def audit_filters(request: Request) -> dict[str, str]:
    """The audit page's filters (its stream's too), as the API takes them."""
    q = request.query_params
    return {k: q[k].strip()[:255] for k in ("actor", "action", "target_id", "since") if q.get(k, "").strip()}


class BadForm(Exception):
    pass


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form (the only kind the console's pages send), one value per name."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise BadForm("expected a form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadForm("the form is too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadForm("the form is not UTF-8") from None
    return {k: v[-1] for k, v in fields.items()}


def form_action(handler: Callable[[Request, Session, dict[str, str]], Awaitable[Response]]):
    """A state-changing form post: signed in, and carrying this session's CSRF token."""

    @signed_in
    @functools.wraps(handler)
    async def action(request: Request, session: Session) -> Response:
        try:
            form = await read_form(request)
        except BadForm as exc:
            return error_page(request, 400, str(exc))
        if not same_secret(form.get("csrf"), session.csrf):
            return error_page(request, 403, "This form is stale or was not sent by the console; reload the page and try again.")
        return await handler(request, session, form)

    return action


def refusal(exc: Refused) -> str:
    """What a form shows of the API's refusal (a signed-out session goes to sign in)."""
    if exc.signed_out:
        raise exc
    field = exc.body.get("field")
    return exc.body.get("detail", "Refused.") + (f" ({field})" if field else "")
