"""Who may poll, ack and report: the codes of docs/api.md, and nothing claimed when refused."""

import jwt
import pytest

from fleetline.cli.keys import ACCESS_TOKEN_KEY
from tests.integration.fleet import Agent
from tests.integration.support import HTTP


def _deliveries(sql):
    return sql.execute("SELECT count(*) FROM deliveries").fetchone()[0]


def test_refused_callers_claim_nothing(fleet, auth, sql):
    me, other = fleet.register(), fleet.register()
    cmd = fleet.queue(me)
    url = f"{fleet.dispatch_url}/api/v1/agents/{me.agent_id}/commands"
    cases = [
        ("no token", {"X-Machine-ID": me.machine_id}, 401, "invalid_token"),
        ("garbage token", {"Authorization": "Bearer abc", "X-Machine-ID": me.machine_id}, 401, "invalid_token"),
        ("other agent's token", other.headers, 403, "agent_mismatch"),
        ("wrong machine", {**me.headers, "X-Machine-ID": other.machine_id}, 403, "machine_mismatch"),
        ("no machine", {"Authorization": me.headers["Authorization"]}, 403, "machine_mismatch"),
    ]
    for name, headers, status, code in cases:
        resp = HTTP.get(url, headers=headers)
        assert (resp.status_code, resp.json()["error"]) == (status, code), name
        for action in ("ack", "result"):
            r = HTTP.post(f"{url}/{cmd['id']}/{action}", headers=headers, json={"status": "succeeded"})
            assert (r.status_code, r.json()["error"]) == (status, code), (name, action)
    assert _deliveries(sql) == 0
    # The other agent may not touch my command through its own path either.
    fleet.poll(me)
    resp = fleet.ack(Agent(other.agent_id, other.machine_id, other.access_token, ""), cmd["id"])
    assert (resp.status_code, resp.json()["error"]) == (404, "not_found")
    assert fleet.command(cmd["id"])["status"] == "sent"


def test_revoked_agent_is_refused_everywhere_with_a_live_access_token(fleet, auth, sql):
    agent = fleet.register()
    cmd = fleet.queue(agent)
    fleet.poll(agent)
    running = fleet.queue(agent)
    fleet.poll(agent)
    assert fleet.ack(agent, running["id"]).json()["status"] == "running"
    second = fleet.queue(agent)
    assert HTTP.delete(f"{auth.url}/api/v1/admin/agents/{agent.agent_id}",
                        headers=fleet.admin).status_code == 204
    before = _deliveries(sql)
    body = fleet.poll(agent, expect=403)
    assert body["error"] == "agent_revoked"
    base = f"{fleet.dispatch_url}/api/v1/agents/{agent.agent_id}/commands/{running['id']}"
    for resp in (fleet.ack(agent, cmd["id"]), fleet.result(agent, cmd["id"]), fleet.result(agent, running["id"]),
                 HTTP.post(f"{base}/output", headers=agent.headers, json={"offset": 0, "data": "still here"}),
                 HTTP.get(f"{fleet.dispatch_url}/api/v1/agents/keyset", headers=agent.headers)):
        assert (resp.status_code, resp.json()["error"]) == (403, "agent_revoked"), resp.request.url
    assert _deliveries(sql) == before
    assert sql.execute("SELECT count(*) FROM command_output").fetchone() == (0,)  # nothing shown to operators
    assert fleet.command(cmd["id"])["status"] == "sent"
    assert fleet.command(running["id"])["status"] == "running"
    assert fleet.command(second["id"])["status"] == "pending"


def test_token_for_an_agent_that_does_not_exist_is_invalid(fleet, key_dir):
    from services.auth.keys import Signer

    signer = Signer.from_file(str(key_dir / ACCESS_TOKEN_KEY), "fleetline-auth", "fleetline", 900)
    ghost = "00000000-0000-0000-0000-0000000000aa"
    token, _ = signer.access_token(ghost, "m-ghost")
    assert jwt.get_unverified_header(token)["kid"]
    resp = HTTP.get(f"{fleet.dispatch_url}/api/v1/agents/{ghost}/commands",
                     headers={"Authorization": f"Bearer {token}", "X-Machine-ID": "m-ghost"})
    assert (resp.status_code, resp.json()["error"]) == (401, "invalid_token")


def test_unknown_command_and_malformed_ids_are_not_found(fleet):
    agent = fleet.register()
    for cid in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        for resp in (fleet.ack(agent, cid), fleet.result(agent, cid)):
            assert (resp.status_code, resp.json()["error"]) == (404, "not_found")
    resp = HTTP.get(f"{fleet.dispatch_url}/api/v1/agents/not-a-uuid/commands", headers=agent.headers)
    assert (resp.status_code, resp.json()["error"]) == (403, "agent_mismatch")


def test_the_agents_path_reads_no_operator_table(fleet, auth, database_url):
    """Polls, acks, results and renewals keep flowing while every operator table is locked
    against reads, where an admin request with a token not yet cached waits for the lock:
    the agents' path does not pass through the operators' guard."""
    import httpx
    import psycopg

    agent = fleet.register()
    queued = [fleet.queue(agent) for _ in range(3)]
    with psycopg.connect(database_url) as locker:
        locker.execute("LOCK TABLE operators, operator_tokens, operator_sessions IN ACCESS EXCLUSIVE MODE")
        claimed = fleet.poll(agent)["commands"]
        assert sorted(c["id"] for c in claimed) == sorted(c["id"] for c in queued)
        for cmd in claimed:
            assert fleet.ack(agent, cmd["id"]).status_code == 200
            assert fleet.result(agent, cmd["id"]).status_code == 200
        renewed = HTTP.post(f"{auth.url}/api/v1/agents/renew",
                            json={"agent_id": agent.agent_id, "refresh_token": agent.refresh_token},
                            headers={"X-Machine-ID": agent.machine_id})
        assert renewed.status_code == 200, renewed.text
        with pytest.raises(httpx.TimeoutException):  # the lock holds: an admin request waits
            httpx.get(f"{fleet.dispatch_url}/api/v1/admin/commands", timeout=1.5,
                      headers={"Authorization": "Bearer flop_not-cached-anywhere"})
        locker.rollback()
    assert [fleet.command(c["id"])["status"] for c in queued] == ["succeeded"] * 3
