"""Schedules: the list (next run, last run and its outcome, a paused one's reason) with a
form to make one; one schedule with its runs linking to their jobs, and pause, resume,
run-now, delete, approve and deny. A client of the admin API: it judges every request."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from services.console.api import Refused
from services.console.job_pages import decision, job_request
from services.console.pages import COMMAND_TYPES, PAGE
from services.console.sessions import Session
from services.console.web import form_action, path_id, redirect, refusal, render, signed_in


async def _schedules_page(request: Request, session: Session, status_code: int = 200,
                          error: str | None = None, form: dict | None = None) -> Response:
    page = await request.app.state.console.api.call(session.token, "GET", "/schedules", params={"limit": PAGE})
    return render(request, "schedules.html", status_code, schedules=page["schedules"], types=COMMAND_TYPES,
                  error=error, form=form or {})


@signed_in
async def schedules(request: Request, session: Session) -> Response:
    return await _schedules_page(request, session)


def schedule_request(form: dict[str, str]) -> dict:
    """The API request a schedule form describes (the API judges what is wrong with it)."""
    every = form.get("every", "").strip()
    timing: dict = ({"interval_s": int(every) if every.isascii() and every.isdigit() else every}
                    if form.get("timing") == "every" else
                    {"cron": form.get("cron", ""), "timezone": form.get("timezone") or "UTC"})
    return {"name": form.get("name", ""), **job_request(form), **timing,
            "overlap": form.get("overlap", "skip"), "catch_up": form.get("catch_up", "skip")}


@form_action
async def create_schedule(request: Request, session: Session, form: dict[str, str]) -> Response:
    try:
        body = schedule_request(form)
    except ValueError:
        return await _schedules_page(request, session, 400, "Params must be a JSON object.", form)
    try:
        made = await request.app.state.console.api.call(session.token, "POST", "/schedules", json=body)
    except Refused as exc:
        return await _schedules_page(request, session, exc.status, refusal(exc), form)
    return redirect(request, f"schedules/{made['id']}")


@signed_in
async def schedule(request: Request, session: Session) -> Response:
    schedule_id = path_id(request, "schedule_id")
    api = request.app.state.console.api
    shown = await api.call(session.token, "GET", f"/schedules/{schedule_id}")
    runs = await api.call(session.token, "GET", f"/schedules/{schedule_id}/runs", params={"limit": PAGE})
    return render(request, "schedule.html", schedule=shown, runs=runs["runs"],
                  command_json=json.dumps(shown["command"].get("params", {})))


def _change(action: str):
    """A button on a schedule's page: pause, resume, run now or delete, through the API."""

    @form_action
    async def change(request: Request, session: Session, form: dict[str, str]) -> Response:
        schedule_id = path_id(request, "schedule_id")
        api = request.app.state.console.api
        if action == "delete":
            await api.call(session.token, "DELETE", f"/schedules/{schedule_id}")
            return redirect(request, "schedules")
        if action == "run-now":
            job = await api.call(session.token, "POST", f"/schedules/{schedule_id}/run-now")
            return redirect(request, f"jobs/{job['id']}")
        await api.call(session.token, "PATCH", f"/schedules/{schedule_id}", json={"enabled": action == "resume"})
        return redirect(request, f"schedules/{schedule_id}")

    return change


pause, resume, run_now, delete = _change("pause"), _change("resume"), _change("run-now"), _change("delete")
approve_schedule, deny_schedule = decision("schedule", "approve"), decision("schedule", "deny")
