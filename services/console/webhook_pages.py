"""Webhooks (admins): the endpoints, and each one's recent deliveries (attempts, status
code, latency, error, the next attempt); a failed delivery can be sent again from there.
Endpoints are registered from the command line (`fleetline webhooks create`), where the
secret they are signed with is printed once."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from services.console.sessions import Session
from services.console.web import form_action, path_id, redirect, render, signed_in


@signed_in
async def webhooks(request: Request, session: Session) -> Response:
    listed = await request.app.state.console.api.call(session.token, "GET", "/webhooks")
    return render(request, "webhooks.html", webhooks=listed["webhooks"])


@signed_in
async def webhook(request: Request, session: Session) -> Response:
    webhook_id = path_id(request, "webhook_id")
    api = request.app.state.console.api
    endpoint = await api.call(session.token, "GET", f"/webhooks/{webhook_id}")
    page = await api.call(session.token, "GET", f"/webhooks/{webhook_id}/deliveries", params={"limit": 50})
    return render(request, "webhook.html", webhook=endpoint, deliveries=page["deliveries"])


@form_action
async def retry(request: Request, session: Session, form: dict[str, str]) -> Response:
    webhook_id, delivery_id = path_id(request, "webhook_id"), path_id(request, "delivery_id")
    await request.app.state.console.api.call(session.token, "POST",
                                             f"/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")
    return redirect(request, f"webhooks/{webhook_id}")
