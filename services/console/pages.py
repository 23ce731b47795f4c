"""Agents and commands: the fleet at a glance, one agent with its recent commands (queue
one, revoke it), and the command listing with results."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import Response

from fleetline import statuses
from fleetline.labels import split_label
from services.console.api import Refused
from services.console.presence import ago, parse_time, presence
from services.console.sessions import Session
from services.console.web import form_action, path_id, redirect, refusal, render, signed_in

PAGE = 100
PRESENCES = ("online", "offline", "revoked")
COMMAND_TYPES = ("ping", "facts", "sleep", "shell", "agent.upgrade")
COMMAND_STATUSES = statuses.COMMAND_STATUSES


def labels_typed(text: str) -> dict[str, str]:
    """"env=prod, role=web" as labels; pieces that are not key=value are dropped."""
    labels = {}
    for piece in text.split(","):
        try:
            key, value = split_label(piece.strip())
        except ValueError:
            continue
        labels[key] = value
    return labels


def _agent_row(agent: dict, now: datetime, poll_interval_s: int, in_flight: Counter) -> dict:
    seen = parse_time(agent.get("last_seen_at"))
    return {**agent, "presence": presence(agent["status"], seen, now, poll_interval_s),
            "seen_ago": ago(seen, now), "in_flight": in_flight[agent["id"]]}


async def _in_flight(api, token: str) -> Counter:
    """Commands delivered and not final, per agent (one listing per status)."""
    counts: Counter = Counter()
    for status in ("sent", "running"):
        page = await api.call(token, "GET", "/commands", params={"status": status, "limit": 1000})
        counts.update(c["agent_id"] for c in page["commands"])
    return counts


@signed_in
async def home(request: Request, session: Session) -> Response:
    return redirect(request, "agents")


@signed_in
async def agents(request: Request, session: Session) -> Response:
    console, q = request.app.state.console, request.query_params
    shown = q.get("status") if q.get("status") in PRESENCES else "all"
    labels, where = q.get("label", ""), q.get("where", "").strip()
    params: dict = {"limit": PAGE, "label": [f"{k}={v}" for k, v in labels_typed(labels).items()]}
    if where:
        params["where"] = where
    if q.get("before"):
        params["before"] = q["before"]
    if shown != "all":
        params["status"] = "revoked" if shown == "revoked" else "active"
    try:
        page = await console.api.call(session.token, "GET", "/agents", params=params)
    except Refused as exc:
        if exc.status != 400:
            raise
        return render(request, "agents.html", 400, agents=[], next=None, shown=shown, labels=labels, where=where,
                      presences=PRESENCES, error=refusal(exc))
    now = datetime.now(timezone.utc)
    in_flight = await _in_flight(console.api, session.token)
    rows = [_agent_row(a, now, console.settings.poll_interval_s, in_flight) for a in page["agents"]]
    if shown in ("online", "offline"):
        rows = [r for r in rows if r["presence"] == shown]
    versions = sorted(Counter(r.get("agent_version") or "" for r in rows).items())
    return render(request, "agents.html", agents=rows, next=page.get("next"), shown=shown,
                  labels=labels, where=where, presences=PRESENCES, versions=versions)


@signed_in
async def releases(request: Request, session: Session) -> Response:
    """The agent releases uploaded (`fleetline releases upload`), and how to move agents to
    one: an upgrade job is any job of type agent.upgrade."""
    listed = await request.app.state.console.api.call(session.token, "GET", "/agent-releases")
    return render(request, "releases.html", releases=listed["releases"])


async def _agent_page(request: Request, session: Session, agent_id: str, status_code: int = 200,
                      error: str | None = None, form: dict | None = None, label_error: str | None = None) -> Response:
    console = request.app.state.console
    agent = await console.api.call(session.token, "GET", f"/agents/{agent_id}")
    recent = await console.api.call(session.token, "GET", "/commands",
                                    params={"agent_id": agent["id"], "limit": 20})
    now = datetime.now(timezone.utc)
    in_flight = Counter(c["agent_id"] for c in recent["commands"] if c["status"] in ("sent", "running"))
    return render(request, "agent.html", status_code, agent=_agent_row(agent, now, console.settings.poll_interval_s, in_flight),
                  commands=recent["commands"], types=COMMAND_TYPES, error=error, form=form or {},
                  label_error=label_error)


@signed_in
async def agent(request: Request, session: Session) -> Response:
    return await _agent_page(request, session, path_id(request, "agent_id"))


@form_action
async def queue_command(request: Request, session: Session, form: dict[str, str]) -> Response:
    agent_id = path_id(request, "agent_id")
    try:
        params = json.loads(form.get("params") or "{}")
    except ValueError:
        return await _agent_page(request, session, agent_id, 400, "Params must be a JSON object.", form)
    body = {"agent_id": agent_id, "type": form.get("type", ""), "params": params}
    try:
        await request.app.state.console.api.call(session.token, "POST", "/commands", json=body)
    except Refused as exc:
        if exc.signed_out:
            raise
        return await _agent_page(request, session, agent_id, exc.status, exc.body.get("detail"), form)
    return redirect(request, f"agents/{agent_id}")


@form_action
async def label_agent(request: Request, session: Session, form: dict[str, str]) -> Response:
    """Operator labels: `set` is "k=v, k=v", `remove` is "k, k"; the API judges them."""
    agent_id = path_id(request, "agent_id")
    changes: dict[str, str | None] = dict(labels_typed(form.get("set", "")))
    changes.update({k.strip(): None for k in form.get("remove", "").split(",") if k.strip()})
    if changes:
        try:
            await request.app.state.console.api.call(session.token, "PATCH", f"/agents/{agent_id}",
                                                     json={"labels": changes})
        except Refused as exc:
            return await _agent_page(request, session, agent_id, exc.status, label_error=refusal(exc))
    return redirect(request, f"agents/{agent_id}")


@form_action
async def revoke_agent(request: Request, session: Session, form: dict[str, str]) -> Response:
    agent_id = path_id(request, "agent_id")
    await request.app.state.console.api.call(session.token, "DELETE", f"/agents/{agent_id}")
    return redirect(request, f"agents/{agent_id}")


@signed_in
async def commands(request: Request, session: Session) -> Response:
    q = request.query_params
    params: dict[str, str | int] = {"limit": PAGE}
    for name in ("status", "agent_id", "before"):
        if q.get(name):
            params[name] = q[name]
    page = await request.app.state.console.api.call(session.token, "GET", "/commands", params=params)
    return render(request, "commands.html", commands=page["commands"], next=page.get("next"),
                  status=q.get("status", ""), agent_id=q.get("agent_id", ""), statuses=COMMAND_STATUSES)


@signed_in
async def command(request: Request, session: Session) -> Response:
    shown = await request.app.state.console.api.call(
        session.token, "GET", f"/commands/{path_id(request, 'command_id')}")
    return render(request, "command.html", command=shown)


@form_action
async def cancel_command(request: Request, session: Session, form: dict[str, str]) -> Response:
    command_id = path_id(request, "command_id")
    await request.app.state.console.api.call(session.token, "POST", f"/commands/{command_id}/cancel")
    return redirect(request, f"commands/{command_id}")
