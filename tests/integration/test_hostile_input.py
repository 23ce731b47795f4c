"""Hostile input and protocol edges, each reproduced as it was found: no 500, no redirect,
no command started that should not be, and nothing changed by a refused request."""

import asyncio
import base64
import threading

import httpx
import pytest

from tests.integration.conftest import create_registration_token
from tests.integration.dbstate import snapshot
from tests.integration.support import HTTP, held_polls, wait_until


@pytest.fixture
def gw(start_gateway, auth_started, dispatch):
    return start_gateway([auth_started.url], [dispatch.url])


def _json_error(resp, status, field=None):
    assert resp.status_code == status, resp.text[:300]
    body = resp.json()
    assert set(body) >= {"error", "detail"} and resp.headers.get("x-request-id")
    if field:
        assert body.get("field") == field, body
    return body


# --- numbers and instants ---------------------------------------------------------------

@pytest.mark.parametrize("value", ["²", "٣", "５", "+5", "0x10", "1e1", "NaN"])
def test_wait_spelled_without_ascii_digits_is_a_400_through_the_gateway(fleet, gw, sql, value):
    agent = fleet.register()
    fleet.queue(agent)
    before = snapshot(sql)
    resp = HTTP.get(f"{gw.url}/api/v1/agents/{agent.agent_id}/commands", params={"wait": value},
                     headers=agent.headers)
    _json_error(resp, 400, "wait")
    assert snapshot(sql) == before


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_instants_outside_years_1_to_9999_in_utc_are_a_400(fleet, sql, stamp):
    agent = fleet.register()
    cmd = fleet.queue(agent)
    fleet.poll(agent)
    before = snapshot(sql)
    for field in ("started_at", "finished_at"):
        resp = HTTP.post(f"{fleet.dispatch_url}/api/v1/agents/{agent.agent_id}/commands/{cmd['id']}/result",
                          json={"status": "succeeded", field: stamp}, headers=agent.headers)
        _json_error(resp, 400, field)
    assert snapshot(sql) == before


@pytest.mark.parametrize("raw", ['{"x": 1e999}', '{"x": -1e999}', '{"x": NaN}', '{"x": Infinity}'])
def test_numbers_that_are_not_finite_are_a_400(fleet, sql, raw):
    agent = fleet.register()
    before = snapshot(sql)
    body = f'{{"agent_id": "{agent.agent_id}", "type": "ping", "params": {raw}}}'
    resp = HTTP.post(f"{fleet.dispatch_url}/api/v1/admin/commands", content=body,
                      headers={**fleet.admin, "Content-Type": "application/json"})
    _json_error(resp, 400)
    assert snapshot(sql) == before


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_cursor_naming_an_impossible_instant_is_a_400_in_both_services(fleet, stamp):
    cursor = _cursor(f"{stamp}|00000000-0000-0000-0000-000000000000")
    for url in (f"{fleet.dispatch_url}/api/v1/admin/commands", f"{fleet.auth_url}/api/v1/admin/agents"):
        _json_error(HTTP.get(url, params={"before": cursor}, headers=fleet.admin), 400, "before")


# --- methods and paths --------------------------------------------------------------------

def test_head_on_the_poll_is_405_and_claims_nothing(fleet, gw, sql):
    agent = fleet.register()
    fleet.queue(agent)
    before = snapshot(sql)
    for base in (fleet.dispatch_url, gw.url):
        resp = httpx.head(f"{base}/api/v1/agents/{agent.agent_id}/commands", headers=agent.headers)
        assert resp.status_code == 405 and "GET" in resp.headers["allow"]
    assert snapshot(sql) == before
    assert sql.execute("SELECT status FROM commands").fetchone()[0] == "pending"


def test_a_trailing_slash_is_404_never_a_redirect(fleet, gw):
    agent = fleet.register()
    paths = [(f"/api/v1/agents/{agent.agent_id}/commands/", agent.headers),
             ("/api/v1/admin/commands/", fleet.admin), ("/api/v1/admin/agents/", fleet.admin),
             ("/api/v1/agents/register/", {})]
    for base in (gw.url, fleet.dispatch_url, fleet.auth_url):
        for path, headers in paths:
            resp = HTTP.get(base + path, headers=headers, follow_redirects=False)
            assert resp.status_code == 404 and "location" not in resp.headers, (base, path)
            _json_error(resp, 404)


def test_other_methods_are_405_with_allow_everywhere(fleet, gw):
    for base in (gw.url, fleet.dispatch_url):
        resp = HTTP.delete(f"{base}/api/v1/admin/commands", headers=fleet.admin)
        assert _json_error(resp, 405)["error"] == "method_not_allowed"
        assert set(resp.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    resp = HTTP.post(f"{gw.url}/healthz")
    assert _json_error(resp, 405) and resp.headers["allow"] == "GET"


# --- the ack ------------------------------------------------------------------------------

def _ack(fleet, agent, cmd):
    return HTTP.post(f"{fleet.dispatch_url}/api/v1/agents/{agent.agent_id}/commands/{cmd['id']}/ack",
                      headers=agent.headers)


def test_an_ack_after_expiry_never_starts_the_command(start_dispatch, auth, sql):
    from tests.integration.fleet import Fleet

    fleet = Fleet(auth.url, start_dispatch(FLEETLINE_REAPER_INTERVAL_S="3600").url)
    agent = fleet.register()
    cmd = fleet.queue(agent, ttl_s=1)
    assert [c["id"] for c in fleet.poll(agent)["commands"]] == [cmd["id"]]
    wait_until(lambda: sql.execute("SELECT expires_at <= statement_timestamp() FROM commands").fetchone()[0],
               5, what="expiry")
    resp = _ack(fleet, agent, cmd)
    assert resp.status_code == 200 and resp.json()["status"] == "expired"
    assert sql.execute("SELECT status, acked_at FROM commands").fetchone() == ("expired", None)


def test_an_ack_after_a_lapsed_lease_with_no_retries_left_never_starts_it(start_dispatch, auth, sql):
    from tests.integration.fleet import Fleet

    fleet = Fleet(auth.url, start_dispatch(FLEETLINE_REAPER_INTERVAL_S="3600").url)
    agent = fleet.register()
    cmd = fleet.queue(agent, ack_timeout_s=1, max_retries=0)
    fleet.poll(agent)
    wait_until(lambda: sql.execute("SELECT visible_at <= statement_timestamp() FROM commands").fetchone()[0],
               5, what="the lease to lapse")
    resp = _ack(fleet, agent, cmd)
    assert resp.status_code == 200 and resp.json()["status"] == "timed_out"
    assert sql.execute("SELECT status FROM commands").fetchone()[0] == "timed_out"


def test_racing_acks_all_answer_running(fleet, sql):
    for _ in range(10):
        agent = fleet.register()
        cmd = fleet.queue(agent)
        fleet.poll(agent)

        async def race(agent, cmd):
            async with httpx.AsyncClient(base_url=fleet.dispatch_url, headers=agent.headers) as c:
                url = f"/api/v1/agents/{agent.agent_id}/commands/{cmd['id']}/ack"
                return await asyncio.gather(*(c.post(url) for _ in range(8)))

        answers = asyncio.run(race(agent, cmd))
        assert [r.json()["status"] for r in answers] == ["running"] * 8
    assert sql.execute("SELECT count(*) FROM commands WHERE status <> 'running'").fetchone()[0] == 0


# --- long polls ---------------------------------------------------------------------------

@pytest.mark.parametrize("through_gateway", [False, True])
def test_an_abandoned_long_poll_claims_nothing(fleet, gw, sql, through_gateway):
    agent = fleet.register()
    base = gw.url if through_gateway else fleet.dispatch_url

    def abandon():
        try:
            HTTP.get(f"{base}/api/v1/agents/{agent.agent_id}/commands", params={"wait": 30},
                      headers=agent.headers, timeout=2.0)
        except httpx.TimeoutException:
            pass  # the client gives up after 2 s and closes its connection

    th = threading.Thread(target=abandon)
    th.start()
    wait_until(lambda: held_polls(fleet.dispatch_url) == 1, 10, what="the poll to park")
    th.join()
    # The server notices the departure and drops the waiter (no re-check, no claim).
    wait_until(lambda: held_polls(fleet.dispatch_url) == 0, 10, what="the waiter to be dropped")
    cmd = fleet.queue(agent)
    assert sql.execute("SELECT status, delivery_count FROM commands WHERE id = %s",
                       (cmd["id"],)).fetchone() == ("pending", 0)
    assert [(c["id"], c["delivery"]) for c in fleet.poll(agent)["commands"]] == [(cmd["id"], 1)]


# --- rate-limit keys ------------------------------------------------------------------------

def test_forwarded_for_cannot_choose_the_registration_rate_limit_key(start_service, start_gateway, key_dir):
    auth = start_service("services.auth", FLEETLINE_REGISTRATION_RATE_LIMIT="5/minute")
    gw = start_gateway([auth.url], [auth.url])
    token = create_registration_token(auth.url, max_uses=100)["token"]
    codes = []
    for i in range(12):
        resp = HTTP.post(f"{gw.url}/api/v1/agents/register",
                          headers={"X-Forwarded-For": f"203.0.113.{i}"},
                          json={"registration_token": token, "machine_id": f"m-{i}", "hostname": "h"})
        codes.append(resp.status_code)
    assert codes.count(201) == 5 and codes.count(429) == 7, codes
