"""Long polls at fleet scale: parked polls cost no SQL, and they answer within a second of
anything coming due (a queued command, a lapsed lease), whoever handed the lease out."""

import time
from datetime import datetime

from tests.integration.agentproc import AgentProcess
from tests.integration.conftest import create_registration_token
from tests.integration.fleet import Fleet
from tests.integration.support import HTTP, held_polls, wait_until
from tests.integration.support import metric as _metric


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_parked_poll_runs_no_sql_until_its_deadline(fleet):
    agent = fleet.register()
    before = _metric(fleet.dispatch_url, "fleetline_claim_statements_total")
    held = fleet.hold(agent, wait=7)
    wait_until(lambda: held_polls(fleet.dispatch_url) == 1, 10, what="the poll to park")
    assert held.join(15)["commands"] == []
    # One claim on arrival; none in the 6+ s parked (the old re-check ran one every 5 s),
    # none at the deadline.
    assert _metric(fleet.dispatch_url, "fleetline_claim_statements_total") - before == 1


def test_a_redelivery_reaches_a_held_poll_within_a_second_of_its_ack_timeout(fleet):
    agent = fleet.register()
    cmd = fleet.queue(agent, ack_timeout_s=2)
    first = fleet.poll(agent)["commands"]
    assert [c["id"] for c in first] == [cmd["id"]]  # delivered, never acked
    sent_at = _stamp(fleet.command(cmd["id"])["sent_at"])
    held = fleet.hold(agent)
    assert [(c["id"], c["delivery"]) for c in held.join()["commands"]] == [(cmd["id"], 2)]
    assert held.answered_at - (sent_at + 2) < 1.0


def test_revoking_an_agent_ends_its_held_poll_with_403_at_once(fleet):
    agent = fleet.register()
    held = fleet.hold(agent, wait=30, expect=403)
    wait_until(lambda: held_polls(fleet.dispatch_url) == 1, 10, what="the poll to park")
    revoked = time.time()
    assert HTTP.delete(f"{fleet.auth_url}/api/v1/admin/agents/{agent.agent_id}",
                        headers=fleet.admin).status_code == 204
    assert held.join(35)["error"] == "agent_revoked"
    assert held.answered_at - revoked < 1.0  # not at the end of its 30 s wait


def test_a_lease_handed_out_by_another_replica_wakes_a_poll_held_here(start_dispatch, auth):
    a, b = start_dispatch(), start_dispatch()
    via_a, via_b = Fleet(auth.url, a.url), Fleet(auth.url, b.url)
    agent = via_a.register()
    cmd = via_a.queue(agent, ack_timeout_s=3)
    assert [c["id"] for c in via_a.poll(agent)["commands"]] == [cmd["id"]]
    sent_at = _stamp(via_a.command(cmd["id"])["sent_at"])
    held = via_b.hold(agent)
    assert [c["id"] for c in held.join()["commands"]] == [cmd["id"]]
    assert held.answered_at - (sent_at + 3) < 1.0  # found by B's look-ahead sweep


def test_the_real_agent_gets_a_command_within_a_second_with_a_300_s_interval(start_service, start_gateway, tmp_path):
    slow = {"FLEETLINE_POLL_INTERVAL_S": "300", "FLEETLINE_RAPID_POLL_INTERVAL_S": "300"}
    auth = start_service("services.auth", **slow)
    dispatch = start_service("services.dispatch", FLEETLINE_JWKS_URL=f"{auth.url}/.well-known/jwks.json", **slow)
    gw = start_gateway([auth.url], [dispatch.url])
    agent = AgentProcess(gw.url, tmp_path / "a1", "machine-a1", create_registration_token(gw.url)["token"])
    try:
        agent.wait_log("agent_started")
        wait_until(lambda: held_polls(dispatch.url) == 1, 60, what="the agent's poll to park")
        fleet = Fleet(auth.url, dispatch.url)
        agent_id = HTTP.get(f"{auth.url}/api/v1/admin/agents", headers=fleet.admin).json()["agents"][0]["id"]
        cmd = HTTP.post(f"{dispatch.url}/api/v1/admin/commands", headers=fleet.admin,
                         json={"agent_id": agent_id, "type": "ping"}).json()
        done = wait_until(lambda: (c := fleet.command(cmd["id"]))["status"] == "succeeded" and c, 10, 0.05,
                          "the ping to succeed")
        assert _stamp(done["sent_at"]) - _stamp(done["created_at"]) < 1.0
    finally:
        agent.stop()


def test_the_longest_wait_is_the_servers_setting(fleet, start_dispatch):
    agent = fleet.register()
    url = f"{fleet.dispatch_url}/api/v1/agents/{agent.agent_id}/commands"
    refused = HTTP.get(url, params={"wait": 61}, headers=agent.headers)
    assert (refused.status_code, refused.json()["field"]) == (400, "wait")  # the default longest is 60
    patient = start_dispatch(FLEETLINE_MAX_WAIT_S="120")
    fleet.queue(agent)  # something due: the held poll answers at once
    long = HTTP.get(f"{patient.url}/api/v1/agents/{agent.agent_id}/commands", params={"wait": 120},
                    headers=agent.headers)
    assert long.status_code == 200 and len(long.json()["commands"]) == 1
    too_long = HTTP.get(f"{patient.url}/api/v1/agents/{agent.agent_id}/commands", params={"wait": 121},
                        headers=agent.headers)
    assert too_long.status_code == 400


def test_an_agent_asking_for_a_longer_wait_than_the_server_allows_falls_back_and_still_works(fleet_stack):
    agent = fleet_stack.agent("a1", extra_args=["--poll-wait", "200"])
    agent.wait_log("poll_wait_refused")
    dispatch = fleet_stack.services["dispatch"].url
    wait_until(lambda: held_polls(dispatch) == 1, 30, what="the agent's poll to park at the server's longest")
    cid = fleet_stack.queue(fleet_stack.agent_id(), "ping")["id"]
    fleet_stack.wait_status(cid, {"succeeded"}, timeout=10)
