"""`fleetline webhooks list|create|show|update|delete|deliveries|retry|rotate-secret`:
events out, from the command line (docs/api.md, events out: webhooks)."""

from __future__ import annotations

from typing import Any

from fleetline.cli.admin_client import Api

WEBHOOK_COLUMNS = ["id", "url", "events", "enabled", "disabled_reason", "description"]
DELIVERY_COLUMNS = ["id", "event_type", "status", "attempts", "status_code", "latency_ms", "error",
                    "next_attempt_at", "created_at"]


def rows(result: Any) -> tuple[list[dict], list[str]] | None:
    """How a webhooks answer prints as a table (None: it is not one)."""
    if isinstance(result, dict) and isinstance(result.get("webhooks"), list):
        return [{**w, "events": ",".join(w["events"])} for w in result["webhooks"]], WEBHOOK_COLUMNS
    if isinstance(result, dict) and isinstance(result.get("deliveries"), list):
        return result["deliveries"], DELIVERY_COLUMNS
    return None


def _path(a, tail: str = "") -> str:
    return f"/api/v1/admin/webhooks/{a.id}{tail}"


def list_(api: Api, a) -> Any:
    return api.call("GET", "/api/v1/admin/webhooks")


def create(api: Api, a) -> Any:
    return api.call("POST", "/api/v1/admin/webhooks",
                    json={"url": a.endpoint_url, "events": a.event, "description": a.description})


def show(api: Api, a) -> Any:
    return api.call("GET", _path(a))


def update(api: Api, a) -> Any:
    change = {"url": a.endpoint_url, "events": a.event or None, "description": a.description,
              "enabled": {"on": True, "off": False}.get(a.enabled or "")}
    return api.call("PATCH", _path(a), json={k: v for k, v in change.items() if v is not None})


def rotate_secret(api: Api, a) -> Any:
    return api.call("PATCH", _path(a), json={"rotate_secret": True})


def delete(api: Api, a) -> Any:
    api.call("DELETE", _path(a))
    return {"deleted": a.id}


def deliveries(api: Api, a) -> Any:
    params = {"status": a.status, "limit": a.limit, "before": a.before}
    return api.call("GET", _path(a, "/deliveries"), params={k: v for k, v in params.items() if v})


def retry(api: Api, a) -> Any:
    return api.call("POST", _path(a, f"/deliveries/{a.delivery}/retry"))


def add_parsers(group, cmd) -> None:
    hooks = group("webhooks", "events sent to your pager, chat or SIEM (signed, retried)")
    cmd(hooks, "list", list_, "list webhook endpoints (admin)")
    p = cmd(hooks, "create", create, "register an endpoint; its signing secret is printed once")
    p.add_argument("endpoint_url", metavar="URL", help="https://... (a public address)")
    p.add_argument("--event", action="append", required=True, metavar="TYPE",
                   help="job.finished, command.failed, agent.offline, agent.online, agent.enrolled, agent.revoked, "
                        "approval.requested, schedule.run_failed, audit.<action>, audit.* (repeatable)")
    p.add_argument("--description", default="")
    cmd(hooks, "show", show, "show one endpoint").add_argument("id")
    p = cmd(hooks, "update", update, "change an endpoint's url, events, description, or switch it on or off")
    p.add_argument("id")
    p.add_argument("--endpoint-url", metavar="URL", help="where to send (--url is the gateway's)")
    p.add_argument("--event", action="append", metavar="TYPE", help="the events, all of them (repeatable)")
    p.add_argument("--description")
    p.add_argument("--enabled", choices=["on", "off"])
    cmd(hooks, "rotate-secret", rotate_secret, "a new secret, printed once; the old one signs too for 24 h"
        ).add_argument("id")
    cmd(hooks, "delete", delete, "delete an endpoint and its deliveries").add_argument("id")
    p = cmd(hooks, "deliveries", deliveries, "an endpoint's deliveries, newest first")
    p.add_argument("id")
    p.add_argument("--status", choices=["pending", "delivered", "failed"])
    p.add_argument("--limit", type=int)
    p.add_argument("--before", help="the cursor a previous page printed")
    p = cmd(hooks, "retry", retry, "send a delivery again now (the same webhook-id)")
    p.add_argument("id")
    p.add_argument("delivery")
