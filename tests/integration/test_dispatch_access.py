"""Who may poll, ack and report: the codes of API.md, and nothing claimed when refused."""

import jwt

from tests.integration.fleet import Agent
from tests.integration.support import HTTP
from fleetline.cli.keys import ACCESS_TOKEN_KEY


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
    second = fleet.queue(agent)
    assert HTTP.delete(f"{auth.url}/api/v1/admin/agents/{agent.agent_id}",
                        headers=fleet.admin).status_code == 204
    before = _deliveries(sql)
    body = fleet.poll(agent, expect=403)
    assert body["error"] == "agent_revoked"
    for resp in (fleet.ack(agent, cmd["id"]), fleet.result(agent, cmd["id"])):
        assert (resp.status_code, resp.json()["error"]) == (403, "agent_revoked")
    assert _deliveries(sql) == before
    assert fleet.command(cmd["id"])["status"] == "sent"
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
