"""The poll, ack and result as docs/api.md specifies them, one request at a time."""

from tests.integration.support import HTTP


def test_queue_poll_ack_result_roundtrip(fleet, sql):
    agent = fleet.register()
    cmd = fleet.queue(agent, params={"x": 1})
    assert cmd["status"] == "pending" and cmd["retry_count"] == 0 and cmd["max_retries"] == 5

    body = fleet.poll(agent)
    (item,) = body["commands"]
    assert set(item) == {"id", "type", "params", "created_at", "expires_at", "delivery", "run_timeout_s", "signed"}
    assert (item["id"], item["delivery"], item["params"]) == (cmd["id"], 1, {"x": 1})
    assert body["poll_interval_s"] == 5  # rapid: it just received a command

    acked = fleet.ack(agent, cmd["id"])
    assert acked.status_code == 200 and acked.json()["status"] == "running"
    assert fleet.ack(agent, cmd["id"]).json()["status"] == "running"  # repeat: no-op

    done = fleet.result(agent, cmd["id"], output="pong")
    assert done.status_code == 200
    state = done.json()
    assert state["status"] == "succeeded"
    assert state["result"] == {"exit_code": 0, "output": "pong", "started_at": "2026-11-27T10:00:00.000000Z",
                               "finished_at": "2026-11-27T10:00:01.000000Z"}
    assert fleet.result(agent, cmd["id"], output="pong").status_code == 200  # same outcome again
    assert fleet.result(agent, cmd["id"], status="failed", exit_code=1).status_code == 409
    assert fleet.ack(agent, cmd["id"]).json()["status"] == "succeeded"  # final: do not run
    assert fleet.poll(agent)["commands"] == []
    assert sql.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 1


def test_empty_poll_of_a_quiet_agent_says_standard_interval(fleet):
    agent = fleet.register()
    assert fleet.poll(agent) == {"commands": [], "poll_interval_s": 300, "facts_interval_s": 3600}


def test_priority_then_age_and_limit(fleet):
    agent = fleet.register()
    low = fleet.queue(agent, priority=-5)
    mid1 = fleet.queue(agent)
    high = fleet.queue(agent, priority=50)
    mid2 = fleet.queue(agent)
    first = [c["id"] for c in fleet.poll(agent, limit=2)["commands"]]
    second = [c["id"] for c in fleet.poll(agent, limit=10)["commands"]]
    assert first == [high["id"], mid1["id"]]
    assert second == [mid2["id"], low["id"]]


def test_result_for_ended_commands_is_conflict_and_changes_nothing(fleet, sql):
    agent = fleet.register()
    cancelled = fleet.queue(agent)
    fleet.poll(agent)
    assert fleet.cancel(cancelled["id"]).json()["status"] == "cancelled"
    assert fleet.cancel(cancelled["id"]).status_code == 409
    resp = fleet.result(agent, cancelled["id"])
    assert (resp.status_code, resp.json()["error"]) == (409, "conflict")
    assert fleet.command(cancelled["id"])["status"] == "cancelled"
    assert fleet.ack(agent, cancelled["id"]).json()["status"] == "cancelled"


def test_idempotency_key_returns_the_existing_command(fleet, sql):
    agent = fleet.register()
    first = fleet.queue(agent, idempotency_key="deploy-42")
    again = fleet.queue(agent, expect=200, idempotency_key="deploy-42")
    assert again["id"] == first["id"]
    other = fleet.register()
    assert fleet.queue(other, idempotency_key="deploy-42")["id"] != first["id"]
    assert sql.execute("SELECT count(*) FROM commands").fetchone()[0] == 2


def test_admin_list_pages_newest_first_with_filters(fleet):
    agent, other = fleet.register(), fleet.register()
    ids = [fleet.queue(agent)["id"] for _ in range(5)]
    fleet.queue(other)
    seen, cursor = [], None
    while True:
        params = {"agent_id": agent.agent_id, "limit": 2, **({"before": cursor} if cursor else {})}
        page = HTTP.get(f"{fleet.dispatch_url}/api/v1/admin/commands", params=params,
                         headers=fleet.admin).json()
        seen += [c["id"] for c in page["commands"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    pending = HTTP.get(f"{fleet.dispatch_url}/api/v1/admin/commands", params={"status": "pending"},
                        headers=fleet.admin).json()
    assert len(pending["commands"]) == 6 and pending["next"] is None


def test_unknown_and_revoked_agents_for_create(fleet, auth):
    agent = fleet.register()
    resp = HTTP.post(f"{fleet.dispatch_url}/api/v1/admin/commands", headers=fleet.admin,
                      json={"agent_id": "00000000-0000-0000-0000-000000000000", "type": "ping"})
    assert (resp.status_code, resp.json()["error"]) == (404, "not_found")
    HTTP.delete(f"{auth.url}/api/v1/admin/agents/{agent.agent_id}", headers=fleet.admin)
    resp = HTTP.post(f"{fleet.dispatch_url}/api/v1/admin/commands", headers=fleet.admin,
                      json={"agent_id": agent.agent_id, "type": "ping"})
    assert (resp.status_code, resp.json()["error"]) == (409, "conflict")
