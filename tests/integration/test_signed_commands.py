"""Signed commands, server side: every delivered command carries a signature its agent can
check against a keyset the root key vouches for; keysets are installed only when the root
signed them and their version rises; a refused command ends `rejected`."""

import json
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetline.cli.keys import ONLINE_KEY, ROOT_KEY, ROOT_PUB, public_key_of
from fleetline.signing import (
    COMMAND_CONTEXT,
    KEYSET_CONTEXT,
    b64url_decode,
    load_private,
    load_public,
    sign_keyset,
    verify,
)
from tests.integration.dbstate import snapshot
from tests.integration.support import HTTP


def _keys_of(keyset_document: dict, root_pub: str) -> dict:
    payload = verify(load_public(root_pub), KEYSET_CONTEXT, keyset_document)
    return {k["kid"]: load_public(k["public_key"]) for k in payload["keys"]}


def test_a_delivered_command_is_signed_for_its_agent_by_a_key_the_root_vouches_for(fleet, key_dir, sql):
    agent = fleet.register()
    cmd = fleet.queue(agent, type="shell", params={"argv": ["uptime"], "n": 3}, ttl_s=600, run_timeout_s=30)
    delivered = fleet.poll(agent)["commands"][0]
    root_pub = (key_dir / ROOT_PUB).read_text().strip()
    document = HTTP.get(f"{fleet.dispatch_url}/api/v1/agents/keyset", headers=agent.headers).json()
    keys = _keys_of(document, root_pub)
    signed = delivered["signed"]
    payload = verify(keys[signed["kid"]], COMMAND_CONTEXT, signed)
    assert payload == {"v": 1, "aud": "fleetline-agent", "command_id": cmd["id"], "agent_id": agent.agent_id,
                       "type": "shell", "params": {"argv": ["uptime"], "n": 3}, "issued_at": cmd["created_at"],
                       "expires_at": cmd["expires_at"], "run_timeout_s": 30, "issued_by": "bootstrap"}
    # The expiry the agent checks is the one the server enforces.
    assert datetime.fromisoformat(payload["expires_at"].replace("Z", "+00:00")) == \
        sql.execute("SELECT expires_at FROM commands").fetchone()[0]


def test_a_database_side_change_of_params_does_not_change_what_was_signed(fleet, sql):
    agent = fleet.register()
    fleet.queue(agent, type="shell", params={"argv": ["true"]})
    sql.execute("""UPDATE commands SET params = '{"argv": ["rm", "-rf", "/"]}'""")
    delivered = fleet.poll(agent)["commands"][0]
    assert delivered["params"] == {"argv": ["rm", "-rf", "/"]}  # the unsigned copy says so...
    signed = json.loads(b64url_decode(delivered["signed"]["payload"]))
    assert signed["params"] == {"argv": ["true"]}  # ...the signature does not


@pytest.mark.parametrize("params", [{"x": 1.5}, {"x": [0.1]}, {"x": 2**60}, {"é": 1}])
def test_params_that_cannot_be_signed_exactly_are_refused(fleet, sql, params):
    agent = fleet.register()
    before = snapshot(sql)
    resp = HTTP.post(f"{fleet.dispatch_url}/api/v1/admin/commands", headers=fleet.admin,
                      json={"agent_id": agent.agent_id, "type": "ping", "params": params})
    assert (resp.status_code, resp.json()["field"]) == (400, "params")
    assert snapshot(sql) == before


def test_keysets_install_only_signed_by_the_root_and_only_upwards(fleet, key_dir, sql):
    url = f"{fleet.dispatch_url}/api/v1/admin/command-keyset"
    root = load_private(str(key_dir / ROOT_KEY))
    online = public_key_of(str(key_dir / ONLINE_KEY))
    newer = Ed25519PrivateKey.generate().public_key()
    v2 = sign_keyset(root, [online, newer], 2, 30)
    assert HTTP.put(url, json=v2, headers=fleet.admin).status_code == 200
    assert HTTP.put(url, json=v2, headers=fleet.admin).status_code == 409
    assert HTTP.put(url, json=sign_keyset(root, [online], 1, 30), headers=fleet.admin).status_code == 409
    before = snapshot(sql)
    stranger = Ed25519PrivateKey.generate()
    forged = dict(sign_keyset(stranger, [online], 3, 30), root_kid=v2["root_kid"])
    for bad in (sign_keyset(stranger, [online], 3, 30), forged, {**v2, "sig": forged["sig"]}, {"payload": "x"},
                sign_keyset(root, [online], 3, -1)):
        resp = HTTP.put(url, json=bad, headers=fleet.admin)
        assert (resp.status_code, resp.json()["error"]) == (400, "invalid_request"), resp.text
    assert snapshot(sql) == before
    agent = fleet.register()
    served = HTTP.get(f"{fleet.dispatch_url}/api/v1/agents/keyset", headers=agent.headers).json()
    assert served == {k: v2[k] for k in ("payload", "sig", "root_kid")}
    reg = fleet.registration  # what the last registration answered
    assert reg["command_keyset"] == served and reg["root_public_key"] == (key_dir / ROOT_PUB).read_text().strip()


def test_a_refused_command_ends_rejected_and_is_never_delivered_again(fleet):
    agent = fleet.register()
    cmd = fleet.queue(agent, ack_timeout_s=1)
    fleet.poll(agent)
    resp = HTTP.post(f"{fleet.dispatch_url}/api/v1/agents/{agent.agent_id}/commands/{cmd['id']}/result",
                      headers=agent.headers,
                      json={"status": "rejected", "output": "signature does not verify",
                            "finished_at": datetime.now(timezone.utc).isoformat()})
    assert resp.status_code == 200 and resp.json()["status"] == "rejected"
    assert fleet.command(cmd["id"])["status"] == "rejected"
    assert fleet.poll(agent, wait=2)["commands"] == []
