"""Operators and the audit trail: admins add operators, change their role, scope, email and
password, disable them, and manage anyone's tokens; every operator manages its own tokens
(`/console/tokens`). A new token's secret is shown once, on the page that made it. The API
decides who may do what: a refusal is its 403, shown as it is."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response

from services.common.operators import ROLES
from services.console.api import Refused
from services.console.pages import labels_typed
from services.console.sessions import Session
from services.console.web import audit_filters, form_action, path_id, redirect, render, signed_in

AUDIT_PAGE = 100
TOKEN_DAYS = (1, 7, 30, 90, 365)


def scope_typed(form: dict[str, str]) -> dict:
    """The scope fields of a form: labels as "env=staging, role=web", types as "ping, facts"
    (empty or "*": every type)."""
    types = [t.strip() for t in form.get("command_types", "").split(",") if t.strip()] or ["*"]
    return {"labels": labels_typed(form.get("labels", "")), "command_types": types}


def scope_text(scope: dict) -> dict[str, str]:
    return {"labels": ", ".join(f"{k}={v}" for k, v in (scope.get("labels") or {}).items()),
            "command_types": ", ".join(scope.get("command_types") or ["*"])}


# --- operators (admins) ----------------------------------------------------------------------


async def _operators_page(request: Request, session: Session, status_code: int = 200, error: str | None = None,
                          form: dict | None = None) -> Response:
    listed = await request.app.state.console.api.call(session.token, "GET", "/operators")
    return render(request, "operators.html", status_code, operators=listed["operators"], roles=ROLES,
                  error=error, form=form or {})


@signed_in
async def operators(request: Request, session: Session) -> Response:
    return await _operators_page(request, session)


@form_action
async def create_operator(request: Request, session: Session, form: dict[str, str]) -> Response:
    body = {"name": form.get("name", "").strip(), "role": form.get("role", ""), "scope": scope_typed(form),
            "email": form.get("email", "").strip() or None, "password": form.get("password") or None}
    try:
        made = await request.app.state.console.api.call(session.token, "POST", "/operators", json=body)
    except Refused as exc:
        if exc.signed_out:
            raise
        return await _operators_page(request, session, exc.status, exc.body.get("detail"), form)
    return redirect(request, f"operators/{made['id']}")


async def _operator_page(request: Request, session: Session, operator_id: str, status_code: int = 200,
                         error: str | None = None, new_token: dict | None = None) -> Response:
    api = request.app.state.console.api
    shown = await api.call(session.token, "GET", f"/operators/{operator_id}")
    tokens = await api.call(session.token, "GET", f"/operators/{operator_id}/tokens")
    return render(request, "operator.html", status_code, operator=shown, scope=scope_text(shown["scope"]),
                  tokens=tokens["tokens"], roles=ROLES, error=error, new_token=new_token, days=TOKEN_DAYS)


@signed_in
async def operator(request: Request, session: Session) -> Response:
    return await _operator_page(request, session, path_id(request, "operator_id"))


@form_action
async def update_operator(request: Request, session: Session, form: dict[str, str]) -> Response:
    operator_id = path_id(request, "operator_id")
    if form.get("disabled") in ("true", "false"):
        body: dict = {"disabled": form["disabled"] == "true"}
    else:
        body = {"role": form.get("role", ""), "scope": scope_typed(form), "email": form.get("email", "").strip() or None}
        if form.get("password"):
            body["password"] = form["password"]
    try:
        await request.app.state.console.api.call(session.token, "PATCH", f"/operators/{operator_id}", json=body)
    except Refused as exc:
        if exc.signed_out:
            raise
        return await _operator_page(request, session, operator_id, exc.status, exc.body.get("detail"))
    return redirect(request, f"operators/{operator_id}")


# --- tokens (an operator its own; admins anyone's) ---------------------------------------------


async def _tokens_page(request: Request, session: Session, status_code: int = 200, error: str | None = None,
                       new_token: dict | None = None) -> Response:
    tokens = await request.app.state.console.api.call(session.token, "GET", f"/operators/{session.who['id']}/tokens")
    return render(request, "tokens.html", status_code, tokens=tokens["tokens"], error=error, new_token=new_token,
                  days=TOKEN_DAYS)


@signed_in
async def tokens(request: Request, session: Session) -> Response:
    return await _tokens_page(request, session)


def _token_request(form: dict[str, str]) -> dict:
    days = int(form["days"]) if form.get("days", "").isdigit() and int(form["days"]) in TOKEN_DAYS else 30
    return {"expires_in_s": days * 86400, "note": form.get("note", "")[:1024]}


@form_action
async def create_token(request: Request, session: Session, form: dict[str, str]) -> Response:
    """A new token for the operator in the path; its secret is shown on this answer only."""
    operator_id = path_id(request, "operator_id")
    own = operator_id == session.who["id"]
    try:
        made = await request.app.state.console.api.call(session.token, "POST", f"/operators/{operator_id}/tokens",
                                                        json=_token_request(form))
    except Refused as exc:
        if exc.signed_out:
            raise
        made, error = None, exc.body.get("detail")
    else:
        error = None
    if own and not session.is_admin:
        return await _tokens_page(request, session, 201 if made else 400, error, made)
    return await _operator_page(request, session, operator_id, 201 if made else 400, error, made)


@form_action
async def revoke_token(request: Request, session: Session, form: dict[str, str]) -> Response:
    token_id = path_id(request, "token_id")
    await request.app.state.console.api.call(session.token, "DELETE", f"/operator-tokens/{token_id}")
    try:  # back to the page the form was on: the operator's (an admin's view) or one's own
        owner = str(uuid.UUID(form.get("operator_id", "")))
    except ValueError:
        owner = session.who["id"]
    return redirect(request, "tokens" if owner == session.who["id"] else f"operators/{owner}")


# --- the audit trail (admins) ------------------------------------------------------------------


@signed_in
async def audit(request: Request, session: Session) -> Response:
    filters = audit_filters(request)
    params = {**filters, "limit": AUDIT_PAGE}
    if request.query_params.get("before"):
        params["before"] = request.query_params["before"]
    try:
        page = await request.app.state.console.api.call(session.token, "GET", "/audit", params=params)
    except Refused as exc:
        if exc.signed_out or exc.status == 403:
            raise
        return render(request, "audit.html", exc.status, events=[], next=None, filters=filters,
                      error=exc.body.get("detail"), live=False)
    return render(request, "audit.html", events=page["events"], next=page.get("next"), filters=filters,
                  error=None, live=not request.query_params.get("before"))
