"""Jobs: the list with live progress bars and a form to start one; one job with its targets
(filterable by status) and a cancel button."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fleetline import statuses
from services.console.api import Refused
from services.console.pages import COMMAND_TYPES, PAGE, labels_typed
from services.console.sessions import Session
from services.console.web import form_action, path_id, redirect, refusal, render, signed_in

JOB_STATUSES = statuses.JOB_STATUSES
TARGET_STATUSES = statuses.TARGET_STATUSES
# The progress bar, left to right: how targets ended, then what is still under way.
BAR_ORDER = (*statuses.TARGET_ENDS, *reversed(statuses.TARGET_LIVE))


def bar(counts: dict, total: int) -> list[dict]:
    """The progress bar's segments as SVG rectangles (x and width in percent)."""
    segments, x = [], 0.0
    for status in BAR_ORDER:
        width = 100.0 * counts.get(status, 0) / total if total else 0.0
        segments.append({"status": status, "x": round(x, 3), "width": round(width, 3)})
        x += width
    return segments


async def _jobs_page(request: Request, session: Session, status_code: int = 200,
                     error: str | None = None, form: dict | None = None, preview: dict | None = None) -> Response:
    q = request.query_params
    params: dict = {"limit": 50}
    if q.get("status") in JOB_STATUSES:
        params["status"] = q["status"]
    if q.get("before"):
        params["before"] = q["before"]
    api = request.app.state.console.api
    page = await api.call(session.token, "GET", "/jobs", params=params)
    awaiting = await api.call(session.token, "GET", "/jobs", params={"status": "awaiting_approval", "limit": 100})
    return render(request, "jobs.html", status_code, jobs=page["jobs"], next=page.get("next"),
                  status=params.get("status", ""), statuses=JOB_STATUSES, types=COMMAND_TYPES,
                  error=error, form=form or {}, bar=bar, awaiting=awaiting["jobs"], preview=preview)


@signed_in
async def jobs(request: Request, session: Session) -> Response:
    return await _jobs_page(request, session)


def _window(text: str) -> int | str | None:
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isascii() and text.isdigit() else text


def job_request(form: dict[str, str]) -> dict:
    """The API request a job form describes (the API judges what is wrong with it)."""
    if form.get("target") == "all":
        selector: dict = {"all_active": True}
    elif form.get("target") == "where":
        labels = labels_typed(form.get("labels", ""))
        selector = {"where": form.get("where", ""), **({"labels": labels} if labels else {})}
    else:
        selector = {"labels": labels_typed(form.get("labels", ""))}
    failures = form.get("max_failures", "").strip()
    return {
        "selector": selector,
        "command": {"type": form.get("type", ""), "params": json.loads(form.get("params") or "{}")},
        "rollout": {"max_in_flight": _window(form.get("max_in_flight", "")),
                    "max_failures": int(failures) if failures.isascii() and failures.isdigit() else (failures or None)},
    }


@form_action
async def create_job(request: Request, session: Session, form: dict[str, str]) -> Response:
    try:
        body = job_request(form)
    except ValueError:
        return await _jobs_page(request, session, 400, "Params must be a JSON object.", form)
    previewing = "preview" in form
    try:
        job = await request.app.state.console.api.call(session.token, "POST", "/jobs",
                                                       json={**body, "dry_run": previewing})
    except Refused as exc:
        return await _jobs_page(request, session, exc.status, refusal(exc), form)
    if previewing:  # which machines, before anything runs
        return await _jobs_page(request, session, form=form, preview=job)
    return redirect(request, f"jobs/{job['id']}")



@signed_in
async def job(request: Request, session: Session) -> Response:
    job_id, q = path_id(request, "job_id"), request.query_params
    api = request.app.state.console.api
    shown = await api.call(session.token, "GET", f"/jobs/{job_id}")
    params: dict = {"limit": PAGE}
    if q.get("status") in TARGET_STATUSES:
        params["status"] = q["status"]
    if q.get("before"):
        params["before"] = q["before"]
    targets = await api.call(session.token, "GET", f"/jobs/{job_id}/targets", params=params)
    return render(request, "job.html", job=shown, targets=targets["targets"], next=targets.get("next"),
                  status=params.get("status", ""), statuses=TARGET_STATUSES, bar=bar)


@form_action
async def cancel_job(request: Request, session: Session, form: dict[str, str]) -> Response:
    job_id = path_id(request, "job_id")
    try:
        await request.app.state.console.api.call(session.token, "POST", f"/jobs/{job_id}/cancel")
    except Refused as exc:
        if exc.status != 409:  # already finished: the page shows how
            raise
    return redirect(request, f"jobs/{job_id}")


@signed_in
async def where_preview(request: Request, session: Session) -> Response:
    """As an operator types a `where` expression: how many machines it means and the first
    of them (a dry run through the API), or what is wrong with it. JSON, for the page's
    script, which shows it as text."""
    q = request.query_params
    selector: dict = {"where": q.get("where", "")[:4096]}
    labels = labels_typed(q.get("labels", ""))
    if labels:
        selector["labels"] = labels
    try:
        answer = await request.app.state.console.api.call(
            session.token, "POST", "/jobs", json={"selector": selector, "command": {"type": "ping"}, "dry_run": True})
    except Refused as exc:
        if exc.signed_out or exc.status >= 500:
            raise
        if exc.body.get("field") == "selector":  # a well-formed selector that matches nobody
            return JSONResponse({"target_count": 0, "hostnames": []})
        return JSONResponse({"error": refusal(exc)}, status_code=200)  # the page shows it; not the browser's error
    return JSONResponse({"target_count": answer["target_count"],
                         "hostnames": [t["hostname"] for t in answer.get("targets", [])[:20]]})


def decision(kind: str, verdict: str):
    """The form that approves or denies a job or a command awaiting approval; the API decides
    who may. A refusal (its own request, out of scope, decided already) is shown as a page."""

    @form_action
    async def decide(request: Request, session: Session, form: dict[str, str]) -> Response:
        item_id = path_id(request, f"{kind}_id")
        await request.app.state.console.api.call(session.token, "POST", f"/{kind}s/{item_id}/{verdict}",
                                                 json={"comment": form.get("comment", "")[:2048]})
        return redirect(request, f"{kind}s/{item_id}")

    return decide


approve_job, deny_job = decision("job", "approve"), decision("job", "deny")
approve_command, deny_command = decision("command", "approve"), decision("command", "deny")
