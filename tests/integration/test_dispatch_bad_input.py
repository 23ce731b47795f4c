"""Bad input on every dispatch endpoint: JSON 400/404 naming the field, nothing changed."""


from tests.integration.dbstate import snapshot
from tests.integration.support import HTTP

BIG = "x" * (512 * 1024)  # far over every field's limit, under the 1 MiB body limit


def test_poll_query_and_result_body_errors(fleet, sql):
    agent = fleet.register()
    cmd = fleet.queue(agent)
    before = snapshot(sql)
    url = f"{fleet.dispatch_url}/api/v1/agents/{agent.agent_id}/commands"
    for params, field in [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "ten"}, "limit"),
                          ({"limit": "1e3"}, "limit"), ({"wait": 61}, "wait"), ({"wait": -1}, "wait"),
                          ({"wait": "9" * 40}, "wait"), ({"cancels_only": "yes"}, "cancels_only")]:
        resp = HTTP.get(url, params=params, headers=agent.headers)
        assert (resp.status_code, resp.json()["error"], resp.json()["field"]) == (400, "invalid_request", field)
    result_url = f"{url}/{cmd['id']}/result"
    cases = [
        ({}, "status"), ({"status": "done"}, "status"), ({"status": "running"}, "status"),
        ({"status": "succeeded", "exit_code": "0"}, "exit_code"),
        ({"status": "succeeded", "exit_code": 2**40}, "exit_code"),
        ({"status": "succeeded", "output": "x" * 65537}, "output"),
        ({"status": "succeeded", "output": "\u00e9" * 40000}, "output"),  # 80 KB of UTF-8
        ({"status": "succeeded", "output": BIG}, "output"),
        ({"status": "succeeded", "output": "a\u0000b"}, "output"),
        ({"status": "succeeded", "started_at": "yesterday"}, "started_at"),
        ({"status": "succeeded", "finished_at": "2026-11-27T10:00:00"}, "finished_at"),
        ({"status": "succeeded", "finished_at": 12}, "finished_at"),
    ]
    for body, field in cases:
        resp = HTTP.post(result_url, json=body, headers=agent.headers, timeout=30)
        assert resp.status_code == 400, (field, resp.text[:200])
        assert resp.json()["field"] == field
    for raw in (b"", b"nope", b"[]", b"\xff"):
        resp = HTTP.post(result_url, content=raw, headers=agent.headers)
        assert (resp.status_code, resp.json()["error"]) == (400, "invalid_request")
    assert snapshot(sql) == before


def test_admin_create_and_list_errors(fleet, sql):
    agent = fleet.register()
    before = snapshot(sql)
    good = {"agent_id": agent.agent_id, "type": "ping"}
    cases = [
        ({"type": "ping"}, "agent_id"), ({**good, "agent_id": "nope"}, "agent_id"),
        ({**good, "agent_id": 5}, "agent_id"), ({"agent_id": agent.agent_id}, "type"),
        ({**good, "type": ""}, "type"), ({**good, "type": "Ping"}, "type"), ({**good, "type": "a b"}, "type"),
        ({**good, "type": "x" * 65}, "type"), ({**good, "params": []}, "params"),
        ({**good, "params": "x"}, "params"), ({**good, "params": {"a": "x" * 70000}}, "params"),
        ({**good, "params": {"a": "\u0000"}}, "params"),
        ({**good, "priority": 101}, "priority"), ({**good, "priority": 1.5}, "priority"),
        ({**good, "ttl_s": 0}, "ttl_s"), ({**good, "ttl_s": 2592001}, "ttl_s"),
        ({**good, "max_retries": -1}, "max_retries"), ({**good, "max_retries": 101}, "max_retries"),
        ({**good, "ack_timeout_s": 0}, "ack_timeout_s"), ({**good, "ack_timeout_s": 86401}, "ack_timeout_s"),
        ({**good, "run_timeout_s": 604801}, "run_timeout_s"),
        ({**good, "idempotency_key": ""}, "idempotency_key"), ({**good, "idempotency_key": 7}, "idempotency_key"),
    ]
    for body, field in cases:
        resp = HTTP.post(f"{fleet.dispatch_url}/api/v1/admin/commands", json=body, headers=fleet.admin)
        assert resp.status_code == 400, (body, resp.text[:200])
        assert resp.json()["field"] == field, body
    for params, field in [({"agent_id": "x"}, "agent_id"), ({"status": "done"}, "status"),
                          ({"limit": 0}, "limit"), ({"before": "!!"}, "before"),
                          ({"before": "bm9wZQ"}, "before")]:
        resp = HTTP.get(f"{fleet.dispatch_url}/api/v1/admin/commands", params=params, headers=fleet.admin)
        assert (resp.status_code, resp.json()["field"]) == (400, field), params
    for method, path in [("GET", "/api/v1/admin/commands/nope"), ("POST", "/api/v1/admin/commands/nope/cancel"),
                         ("GET", "/api/v1/admin/commands/00000000-0000-0000-0000-000000000000")]:
        resp = HTTP.request(method, fleet.dispatch_url + path, headers=fleet.admin)
        assert (resp.status_code, resp.json()["error"]) == (404, "not_found")
    resp = HTTP.get(f"{fleet.dispatch_url}/api/v1/admin/commands")
    assert (resp.status_code, resp.json()["error"]) == (401, "invalid_token")
    assert snapshot(sql) == before


def test_a_body_over_the_limit_is_413_even_sent_to_the_service_directly(fleet, sql):
    agent = fleet.register()
    before = snapshot(sql)
    body = {"agent_id": agent.agent_id, "type": "ping", "params": {"x": "y" * (1024 * 1024)}}
    resp = HTTP.post(f"{fleet.dispatch_url}/api/v1/admin/commands", json=body, headers=fleet.admin, timeout=30)
    assert (resp.status_code, resp.json()["error"]) == (413, "payload_too_large")
    assert snapshot(sql) == before


def test_schedule_errors_name_the_field_and_change_nothing(fleet, sql):
    fleet.register(labels={"role": "web"})
    good = {"name": "nightly", "selector": {"labels": {"role": "web"}}, "command": {"type": "ping"},
            "cron": "30 2 * * *", "timezone": "Europe/Berlin"}
    made = fleet.admin_call("POST", "/schedules", 201, json=good)
    before = snapshot(sql)
    url = f"{fleet.dispatch_url}/api/v1/admin/schedules"
    cases = [
        ({**good, "name": "other", "cron": "61 * * * *"}, "cron"),
        ({**good, "name": "other", "cron": "* * * *"}, "cron"),
        ({**good, "name": "other", "cron": "@sometimes"}, "cron"),
        ({**good, "name": "other", "timezone": "../../etc/passwd"}, "timezone"),
        ({**good, "name": "other", "timezone": "Mars/Olympus"}, "timezone"),
        ({**good, "name": "other", "interval_s": 60}, "cron"),  # both
        ({**good, "name": "other", "cron": None}, "cron"),  # neither
        ({**good, "name": "other", "cron": None, "interval_s": 0}, "interval_s"),
        ({**good, "name": "other", "cron": None, "interval_s": 31_536_001}, "interval_s"),
        ({**good, "name": ""}, "name"),
        ({**good, "name": "x" * 129}, "name"),
        ({**good, "name": "a\u0000b"}, "name"),
        ({**good, "name": "new\nline"}, "name"),
        ({**good, "name": "other", "overlap": "sometimes"}, "overlap"),
        ({**good, "name": "other", "catch_up": "all"}, "catch_up"),
        ({**good, "name": "other", "enabled": "yes"}, "enabled"),
        ({**good, "name": "other", "selector": {}}, "selector"),
        ({**good, "name": "other", "command": {"type": "ping", "params": "x"}}, "command.params"),
        ({k: v for k, v in good.items() if k != "command"}, "command"),
    ]
    for body, field in cases:
        resp = HTTP.post(url, json=body, headers=fleet.admin)
        assert (resp.status_code, resp.json()["error"], resp.json().get("field")) == (400, "invalid_request", field), \
            (body, resp.text)
    taken = HTTP.post(url, json=good, headers=fleet.admin)
    assert taken.status_code == 409 and taken.json()["field"] == "name"
    one = f"{url}/{made['id']}"
    for body, field in [({"color": "red"}, "color"), ({"cron": "nope"}, "cron"), ({"interval_s": -1}, "interval_s")]:
        resp = HTTP.patch(one, json=body, headers=fleet.admin)
        assert (resp.status_code, resp.json().get("field")) == (400, field), resp.text
    for method, path in [("GET", f"{url}/nope"), ("PATCH", f"{url}/00000000-0000-0000-0000-000000000001"),
                         ("DELETE", f"{url}/00000000-0000-0000-0000-000000000001"), ("GET", f"{url}/{made['id']}x/runs"),
                         ("POST", f"{url}/00000000-0000-0000-0000-000000000001/run-now")]:
        resp = HTTP.request(method, path, headers=fleet.admin, json={} if method == "PATCH" else None)
        assert resp.status_code == 404 and resp.json()["error"] == "not_found", (method, path, resp.text)
    for params in ({"limit": 0}, {"after": "a\u0000"}, {"after": "x" * 200}):
        assert HTTP.get(url, params=params, headers=fleet.admin).status_code == 400, params
    assert snapshot(sql) == before
