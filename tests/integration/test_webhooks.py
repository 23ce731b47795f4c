"""Events out (docs/api.md): webhooks through the gateway, received by a real HTTP server
and verified with the Standard Webhooks library; the outbox written by the change's
transaction, retries with the same id, a sender killed mid-attempt, two replicas sharing
the work, presence, the audit trail as a feed, and where a webhook may not go."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from tests.integration.conftest import ADMIN_TOKEN, FAST, create_registration_token
from tests.integration.support import HTTP, ROOT, metric, wait_until
from tests.integration.webhook_receiver import Receiver

LAB = {"FLEETLINE_WEBHOOK_ALLOW_PRIVATE": "1", "FLEETLINE_WEBHOOK_RETRY_SCALE": "0.02",
       "FLEETLINE_WEBHOOK_INTERVAL_S": "0.2"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def subscribe(stack, url: str, events: list[str]) -> dict:
    r = stack.api("POST", "/webhooks", json={"url": url, "events": events, "description": "test"})
    assert r.status_code == 201, r.text
    assert r.json()["secret"].startswith("whsec_")
    return r.json()


def deliveries(stack, webhook_id: str, **params) -> list[dict]:
    return stack.api("GET", f"/webhooks/{webhook_id}/deliveries", params=params).json()["deliveries"]


@pytest.mark.parametrize("stack_env", [LAB])
def test_a_jobs_end_arrives_signed_once_per_id_after_two_500s(fleet_stack, receiver, stack_env):
    receiver.script = [500, 500]
    hook = subscribe(fleet_stack, receiver.url, ["job.finished"])
    assert "secret" not in fleet_stack.api("GET", f"/webhooks/{hook['id']}").json()  # shown once only
    fleet_stack.agent()
    agent_id = fleet_stack.agent_id()
    job = fleet_stack.api("POST", "/jobs", json={"selector": {"agent_ids": [agent_id]},
                                                 "command": {"type": "ping"}}).json()
    wait_until(lambda: len(receiver.got) >= 3, 60, 0.05, "three attempts")
    attempts = receiver.of_type("job.finished")
    assert len({a.id for a in attempts}) == 1  # one event, one id, on every retry
    bodies = [a.verified(hook["secret"]) for a in attempts]  # every attempt signed
    assert bodies[-1]["data"]["id"] == job["id"] and bodies[-1]["data"]["status"] == "completed"
    assert bodies[-1]["data"]["command_counts"] == {"succeeded": 1}
    listed = wait_until(lambda: (d := deliveries(fleet_stack, hook["id"]))[0]["status"] == "delivered" and d,
                        10, 0.1, "the delivery recorded")
    assert len(listed) == 1 and listed[0]["attempts"] == 3 and listed[0]["status_code"] == 200
    time.sleep(1.0)  # a delivered event is never sent again: nothing more arrives in a while
    assert len(receiver.got) == 3
    assert metric(fleet_stack.services["dispatch"].url, 'fleetline_webhook_deliveries_total{outcome="retry"}') == 2


@pytest.mark.parametrize("stack_env", [LAB])
def test_a_change_that_rolls_back_sends_nothing(fleet_stack, receiver, sql, stack_env):
    hook = subscribe(fleet_stack, receiver.url, ["audit.*", "agent.revoked"])
    before = sql.execute("SELECT count(*) FROM webhook_deliveries").fetchone()[0]
    with sql.transaction():  # one transaction, rolled back
        sql.execute("INSERT INTO audit_events (id, actor_type, actor_name, action, outcome) "
                    "VALUES (gen_random_uuid(), 'operator', 'x', 'agent.revoke', 'ok')")
        assert sql.execute("SELECT count(*) FROM webhook_deliveries").fetchone()[0] == before + 1
        raise psycopg.Rollback()
    assert sql.execute("SELECT count(*) FROM webhook_deliveries").fetchone()[0] == before
    # A refused request (its transaction rolled back) sends nothing either.
    refused = fleet_stack.api("POST", "/jobs", json={"selector": {"agent_ids": ["00000000-0000-0000-0000-000000000001"]},
                                                     "command": {"type": "ping"}})
    assert refused.status_code == 400
    time.sleep(1.0)
    assert [r.json()["type"] for r in receiver.got] == ["audit.webhook.create"] * len(receiver.got)
    assert hook["id"]


@pytest.mark.parametrize("stack_env", [LAB])
def test_a_rotated_secret_signs_beside_the_old_one_for_a_day(fleet_stack, receiver, stack_env):
    hook = subscribe(fleet_stack, receiver.url, ["audit.token.create", "audit.registration_token.create"])
    rotated = fleet_stack.api("PATCH", f"/webhooks/{hook['id']}", json={"rotate_secret": True}).json()
    assert rotated["secret"] != hook["secret"] and rotated["previous_secret_valid_until"]
    create_registration_token(fleet_stack.url)
    got = wait_until(lambda: receiver.got, 20, 0.05, "an event")[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert got.verified(rotated["secret"]) and got.verified(hook["secret"])


def test_a_sender_killed_mid_attempt_leaves_the_event_to_another_replica(start_service, start_gateway, receiver,
                                                                        sql):
    auth = start_service("services.auth", **FAST)
    env = {"FLEETLINE_JWKS_URL": f"{auth.url}/.well-known/jwks.json", **FAST, **LAB}
    first = start_service("services.dispatch", **env)
    gw = start_gateway([auth.url], [first.url])
    receiver.script = ["hang"]
    hook = HTTP.post(f"{gw.url}/api/v1/admin/webhooks", headers=ADMIN,
                     json={"url": receiver.url, "events": ["audit.registration_token.create"]}).json()
    create_registration_token(gw.url)
    wait_until(lambda: receiver.got, 20, 0.02, "the first attempt to arrive (and hang)")
    os.kill(first.proc.pid, signal.SIGKILL)  # claimed, sent, never recorded
    second = start_service("services.dispatch", **env)
    wait_until(lambda: len(receiver.got) >= 2, 60, 0.1, "the attempt again, from the other dispatch")
    assert receiver.got[0].id == receiver.got[1].id  # the same event, the same id
    receiver.got[1].verified(hook["secret"])
    wait_until(lambda: sql.execute("SELECT status FROM webhook_deliveries").fetchone()[0] == "delivered", 20, 0.1,
               "the delivery recorded delivered")
    second.stop()


def test_two_replicas_deliver_a_thousand_events_and_lose_none(start_service, start_gateway, receiver, sql):
    auth = start_service("services.auth", **FAST)
    env = {"FLEETLINE_JWKS_URL": f"{auth.url}/.well-known/jwks.json", **FAST, **LAB,
           "FLEETLINE_REPORT_RATE_LIMIT": "1000000/minute"}
    replicas = [start_service("services.dispatch", **env) for _ in range(2)]
    gw = start_gateway([auth.url], [r.url for r in replicas])
    HTTP.post(f"{gw.url}/api/v1/admin/webhooks", headers=ADMIN,
              json={"url": receiver.url, "events": ["audit.command.create"]}).raise_for_status()
    token = create_registration_token(gw.url)["token"]
    agent_id = HTTP.post(f"{gw.url}/api/v1/agents/register", headers={"X-Machine-ID": "m-1"},
                         json={"registration_token": token, "machine_id": "m-1", "hostname": "h"}).json()["agent_id"]
    for _ in range(1000):
        HTTP.post(f"{gw.url}/api/v1/admin/commands", headers=ADMIN,
                  json={"agent_id": agent_id, "type": "ping"}).raise_for_status()
    wait_until(lambda: len({r.id for r in receiver.got}) >= 1000, 120, 0.2, "1,000 events")
    ids = [r.id for r in receiver.got]
    commands = {r.json()["data"]["target"]["id"] for r in receiver.got}
    assert len(set(ids)) == 1000 and len(commands) == 1000
    retried = sql.execute("SELECT count(*) FROM webhook_deliveries WHERE attempts > 1").fetchone()[0]
    assert len(ids) - len(set(ids)) <= retried  # a duplicate only where an attempt was repeated
    assert sql.execute("SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'").fetchone()[0] == 0
    sent = [metric(r.url, 'fleetline_webhook_deliveries_total{outcome="delivered"}') for r in replicas]
    assert sum(sent) == len(ids)


@pytest.mark.parametrize("stack_env", [{**LAB, "FLEETLINE_OFFLINE_AFTER_S": "4", "FLEETLINE_PRESENCE_SWEEP_S": "0.5",
                                        "FLEETLINE_LAST_SEEN_WRITE_S": "0.5", "FLEETLINE_LAST_SEEN_FLUSH_S": "0.2"}])
def test_an_agent_that_stops_polling_goes_offline_once_and_online_once(fleet_stack, receiver, stack_env):
    hook = subscribe(fleet_stack, receiver.url, ["agent.offline", "agent.online"])
    agent = fleet_stack.agent(extra_args=["--poll-wait", "1"])
    agent_id = fleet_stack.agent_id()
    time.sleep(2)  # seen by a few sweeps: online, learnt, nothing sent
    assert receiver.got == []
    agent.stop()
    offline = wait_until(lambda: receiver.of_type("agent.offline"), 30, 0.1, "agent.offline")
    assert offline[0].verified(hook["secret"])["data"]["id"] == agent_id
    fleet_stack.agent()  # the same machine, back
    wait_until(lambda: receiver.of_type("agent.online"), 30, 0.1, "agent.online")
    time.sleep(2)  # more sweeps: nothing more
    assert [r.json()["type"] for r in receiver.got] == ["agent.offline", "agent.online"]
    assert metric(fleet_stack.services["dispatch"].url, "fleetline_agents_offline") == 0


@pytest.mark.parametrize("stack_env", [LAB])
def test_the_audit_trail_as_a_feed_carries_every_event(fleet_stack, receiver, stack_env):
    hook = subscribe(fleet_stack, receiver.url, ["audit.*"])
    since = fleet_stack.api("GET", "/audit", params={"limit": 1}).json()["events"][0]["at"]
    token = create_registration_token(fleet_stack.url)
    fleet_stack.api("DELETE", f"/registration-tokens/{token['id']}")
    made = fleet_stack.api("POST", "/operators", json={"name": "feed-op", "role": "viewer"}).json()
    viewer = fleet_stack.api("POST", f"/operators/{made['id']}/tokens", json={}).json()["token"]
    assert fleet_stack.api("POST", "/webhooks", {"Authorization": f"Bearer {viewer}"},
                           json={"url": receiver.url, "events": ["audit.*"]}).status_code == 403
    fleet_stack.api("PATCH", f"/webhooks/{hook['id']}", json={"description": "renamed"})
    events = [e for e in fleet_stack.api("GET", "/audit", params={"limit": 1000}).json()["events"]
              if e["at"] >= since]
    wait_until(lambda: len(receiver.got) >= len(events), 30, 0.1, "every audit event")
    received = {r.verified(hook["secret"])["data"]["id"]: r.json() for r in receiver.got}
    assert {e["id"] for e in events} <= set(received)
    forbidden = next(e for e in events if e["outcome"] == "forbidden")
    assert received[forbidden["id"]]["type"] == f"audit.{forbidden['action']}"
    assert received[forbidden["id"]]["data"]["actor"]["name"] == "feed-op"


def test_a_webhook_may_not_reach_inside_the_network(fleet_stack, receiver, sql):
    for url in ("http://127.0.0.1/hook", "https://127.0.0.1/hook", "https://169.254.169.254/latest/meta-data",
                "https://[::1]/hook", "https://10.0.0.8/", "ftp://example.com/", "https://user:pw@example.com/",
                "https:///nohost"):
        r = fleet_stack.api("POST", "/webhooks", json={"url": url, "events": ["job.finished"]})
        assert r.status_code == 400 and r.json()["field"] == "url", (url, r.text)
    assert sql.execute("SELECT count(*) FROM webhook_endpoints").fetchone()[0] == 0
    # A name is checked where it resolves, at every attempt: localhost is loopback.
    hook = subscribe(fleet_stack, f"https://localhost:{receiver.server.server_address[1]}/hook", ["audit.*"])
    create_registration_token(fleet_stack.url)
    failed = wait_until(lambda: [d for d in deliveries(fleet_stack, hook["id"]) if d["error"]], 20, 0.1,
                        "an attempt refused")
    assert "not a public address" in failed[0]["error"]
    assert receiver.got == []


@pytest.mark.parametrize("stack_env", [LAB])
def test_redirects_are_not_followed_and_410_disables_the_endpoint(fleet_stack, receiver, stack_env):
    receiver.script = ["redirect", 410]
    hook = subscribe(fleet_stack, receiver.url, ["audit.registration_token.create"])
    create_registration_token(fleet_stack.url)
    wait_until(lambda: len(receiver.got) >= 2, 30, 0.05, "two attempts")
    assert [r.path for r in receiver.got] == ["/hook", "/hook"]  # never /elsewhere
    endpoint = wait_until(lambda: (e := fleet_stack.api("GET", f"/webhooks/{hook['id']}").json())["enabled"] is False
                          and e, 10, 0.1, "the endpoint disabled")
    assert "410" in endpoint["disabled_reason"]
    listed = deliveries(fleet_stack, hook["id"])
    assert listed[0]["status"] == "failed" and listed[0]["status_code"] == 410
    create_registration_token(fleet_stack.url)  # a disabled endpoint is sent nothing
    time.sleep(1.0)
    assert len(receiver.got) == 2
    # Enabled again and retried by hand: delivered.
    fleet_stack.api("PATCH", f"/webhooks/{hook['id']}", json={"enabled": True})
    retried = fleet_stack.api("POST", f"/webhooks/{hook['id']}/deliveries/{listed[0]['id']}/retry")
    assert retried.status_code == 202
    wait_until(lambda: len(receiver.got) >= 3, 20, 0.05, "the retry")
    assert receiver.got[2].id == listed[0]["id"]
    assert fleet_stack.api("POST", f"/webhooks/{hook['id']}/deliveries/{listed[0]['id']}/retry").status_code in (
        202, 409)


@pytest.mark.parametrize("stack_env", [LAB])
def test_hostile_webhook_requests_are_refused_and_change_nothing(fleet_stack, sql, stack_env):
    for body in ({"url": "https://example.com/", "events": []}, {"url": "https://example.com/", "events": ["nope"]},
                 {"url": "https://example.com/", "events": ["job.finished"], "secret": "mine"},
                 {"url": "https://example.com/\x00", "events": ["job.finished"]},
                 {"url": "https://example.com/", "events": ["audit.x\u202e"]},
                 {"url": "https://example.com/", "events": "job.finished"}, {"events": ["job.finished"]}):
        r = fleet_stack.api("POST", "/webhooks", json=body)
        assert r.status_code == 400, (body, r.text)
    assert fleet_stack.api("GET", "/webhooks/not-a-uuid").status_code == 404
    assert fleet_stack.api("GET", f"/webhooks/{'0' * 8}-0000-0000-0000-{'0' * 12}/deliveries").status_code == 404
    assert sql.execute("SELECT count(*) FROM webhook_endpoints").fetchone()[0] == 0
    hook = subscribe(fleet_stack, "https://example.com/hook", ["job.finished"])
    assert fleet_stack.api("GET", f"/webhooks/{hook['id']}/deliveries", params={"before": "garbage"}
                           ).status_code == 400
    assert json.loads(json.dumps(fleet_stack.api("GET", "/webhooks").json()))["webhooks"][0]["url"] == \
        "https://example.com/hook"


@pytest.mark.parametrize("stack_env", [{**LAB, "FLEETLINE_OFFLINE_AFTER_S": "4", "FLEETLINE_PRESENCE_SWEEP_S": "0.5",
                                        "FLEETLINE_LAST_SEEN_WRITE_S": "0.5", "FLEETLINE_LAST_SEEN_FLUSH_S": "0.2"}])
def test_from_the_cli_a_job_and_an_agent_gone_quiet_arrive_signed(fleet_stack, receiver, stack_env):
    def cli(*args: str) -> str:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}
        done = subprocess.run([sys.executable, "-m", "fleetline", *args, "--url", fleet_stack.url], cwd=ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={**clean, "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN})
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    made = json.loads(cli("webhooks", "create", receiver.url, "--event", "job.finished", "--event",
                          "agent.offline", "--json"))
    agent = fleet_stack.agent(extra_args=["--poll-wait", "1"])
    agent_id = fleet_stack.agent_id()
    cli("jobs", "run", "--agent", agent_id, "--type", "ping", "--wait")
    finished = wait_until(lambda: receiver.of_type("job.finished"), 30, 0.05, "job.finished")
    assert finished[0].verified(made["secret"])["data"]["status"] == "completed"
    agent.stop()
    offline = wait_until(lambda: receiver.of_type("agent.offline"), 30, 0.1, "agent.offline")
    assert offline[0].verified(made["secret"])["data"]["id"] == agent_id
    listing = cli("webhooks", "deliveries", made["id"])
    assert listing.count("delivered") == 2 and "job.finished" in listing and "agent.offline" in listing
    assert made["url"] == receiver.url
    assert made["id"] in cli("webhooks", "list") and "whsec_" not in cli("webhooks", "show", made["id"])
    rotated = json.loads(cli("webhooks", "rotate-secret", made["id"], "--json"))
    assert rotated["secret"] != made["secret"]
