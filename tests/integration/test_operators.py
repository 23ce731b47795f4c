"""Named operators through the gateway, as a team uses them: every admin route refuses a
role below its line in the access table (and the refusal is in the audit trail), scopes
keep an operator to its agents and command types, a revoked token, a disabled operator or a
narrowed role is refused within 1 s by both services, and every change has exactly one event naming who,
what and which request."""

from __future__ import annotations

import time
import uuid

import pytest

from services.auth.app import ACCESS as AUTH_ACCESS
from services.common.admin import ADMIN_PREFIX
from services.common.operators import ROLES
from services.dispatch.app import ACCESS as DISPATCH_ACCESS
from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.support import HTTP, wait_until
from tests.unit.routes import example

BOOTSTRAP = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def gateway(auth, dispatch, start_gateway):
    return start_gateway([auth.url], [dispatch.url])


class Team:
    """Operators made by the bootstrap admin, each with a token of its own."""

    def __init__(self, url: str):
        self.url = url
        self.headers: dict[str, dict] = {}
        self.ids: dict[str, str] = {}

    def api(self, method: str, path: str, who: str | dict = "bootstrap", rid: str | None = None, **kw):
        headers = BOOTSTRAP if who == "bootstrap" else (who if isinstance(who, dict) else self.headers[who])
        if rid:
            headers = {**headers, "X-Request-Id": rid}
        return HTTP.request(method, f"{self.url}{ADMIN_PREFIX}{path}", headers=headers, **kw)

    def add(self, name: str, role: str, scope: dict | None = None, **fields) -> str:
        resp = self.api("POST", "/operators", json={"name": name, "role": role,
                                                    "scope": scope or {"labels": {}, "command_types": ["*"]},
                                                    **fields})
        assert resp.status_code == 201, resp.text
        self.ids[name] = resp.json()["id"]
        token = self.api("POST", f"/operators/{self.ids[name]}/tokens", json={"note": "test"})
        assert token.status_code == 201, token.text
        assert token.json()["token"].startswith("flop_")
        self.headers[name] = {"Authorization": f"Bearer {token.json()['token']}"}
        return self.ids[name]

    def register(self, labels: dict) -> str:
        tok = self.api("POST", "/registration-tokens", json={"max_uses": 1}).json()["token"]
        resp = HTTP.post(f"{self.url}/api/v1/agents/register",
                         json={"registration_token": tok, "machine_id": f"m-{uuid.uuid4()}", "hostname": "h",
                               "labels": labels})
        assert resp.status_code == 201, resp.text
        return resp.json()["agent_id"]


@pytest.fixture
def team(gateway) -> Team:
    return Team(gateway.url)


def _admin_routes():
    for table in (AUTH_ACCESS, DISPATCH_ACCESS):
        for key, access in table.items():
            method, path = key.split(" ", 1)
            yield method, path, access


def test_every_admin_route_refuses_each_role_below_its_least_and_records_each_refusal(team, sql):
    for role in ROLES:
        team.add(f"a-{role}", role)
    refusals = 0
    for method, path, access in _admin_routes():
        body = {} if method in ("POST", "PUT", "PATCH") else None
        for role in ROLES[:ROLES.index(access.role)]:
            resp = team.api(method, example(path), f"a-{role}", json=body)
            assert (resp.status_code, resp.json()["error"]) == (403, "forbidden"), (role, method, path, resp.text)
            refusals += 1
        nobody = team.api(method, example(path), {"Authorization": "Bearer flop_" + "A" * 43}, json=body)
        assert nobody.status_code == 401 and nobody.json()["error"] == "invalid_token", (method, path)
        allowed = team.api(method, example(path), f"a-{access.role}", json=body)
        assert allowed.status_code not in (401, 403) or (allowed.json()["error"] == "forbidden" and path.startswith(
            ("/operators/{", "/operator-tokens"))), (method, path, allowed.text)
    assert refusals > 20
    forbidden = sql.execute("SELECT actor_name, action, outcome FROM audit_events WHERE outcome = 'forbidden'"
                            ).fetchall()
    # Each refusal once, with who and the route's action; the own-token routes' refusals on
    # someone else's tokens (an operator reaching for an id it does not own) come on top.
    assert len([f for f in forbidden if f[0] in ("a-viewer", "a-operator")]) >= refusals
    assert {f[1] for f in forbidden} >= {a.action for _m, _p, a in _admin_routes() if a.role != "viewer"}


def test_a_scoped_operator_reaches_only_its_agents_and_command_types(team, sql):
    staging = [team.register({"env": "staging"}) for _ in range(2)]
    prod = team.register({"env": "prod"})
    team.add("stager", "operator", {"labels": {"env": "staging"}, "command_types": ["ping", "facts"]})
    listed = team.api("GET", "/agents", "stager").json()["agents"]
    assert sorted(a["id"] for a in listed) == sorted(staging)
    assert team.api("GET", f"/agents/{prod}", "stager").status_code == 404
    ok = team.api("POST", "/commands", "stager", json={"agent_id": staging[0], "type": "ping"})
    assert ok.status_code == 201 and ok.json()["created_by"]["name"] == "stager"
    for body in ({"agent_id": prod, "type": "ping"},
                 {"agent_id": staging[0], "type": "shell", "params": {"script": "id"}}):
        refused = team.api("POST", "/commands", "stager", json=body)
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden"), refused.text
    theirs = team.api("POST", "/commands", json={"agent_id": prod, "type": "ping"}).json()["id"]
    assert team.api("GET", f"/commands/{theirs}", "stager").status_code == 404
    assert team.api("POST", f"/commands/{theirs}/cancel", "stager").status_code == 404
    dry = team.api("POST", "/jobs", "stager", json={"selector": {"all_active": True}, "command": {"type": "ping"},
                                                    "dry_run": True})
    assert dry.json()["target_count"] == 2, dry.text
    job = team.api("POST", "/jobs", "stager", json={"selector": {"all_active": True}, "command": {"type": "ping"}})
    assert job.status_code == 201 and job.json()["target_count"] == 2, job.text
    named = team.api("POST", "/jobs", "stager", json={"selector": {"agent_ids": [staging[0], prod]},
                                                      "command": {"type": "ping"}})
    assert named.status_code == 403
    reached = sql.execute("SELECT c.agent_id::text FROM commands c WHERE c.job_id IS NOT NULL").fetchall()
    assert sorted(r[0] for r in reached) == sorted(staging)
    assert sql.execute("SELECT count(*) FROM commands WHERE agent_id = %s", (prod,)).fetchone()[0] == 1
    refused = sql.execute("SELECT count(*) FROM audit_events WHERE actor_name = 'stager' AND outcome = 'forbidden'"
                          ).fetchone()[0]
    assert refused == 3


def _refused_by_both(team: Team, who: str) -> bool:
    return (team.api("GET", "/whoami", who).status_code == 401
            and team.api("GET", "/commands", who).status_code == 401)


@pytest.mark.parametrize("how", ["revoke the token", "disable the operator", "make it a viewer"])
def test_a_revoked_token_or_disabled_operator_is_refused_by_both_services_within_1_s(team, how):
    """Every service hears the change (a notification in the change's transaction) and
    forgets the operators it had cached: not a cache's lifetime (it took 5.2 s)."""
    team.add("leaver", "operator")
    assert team.api("GET", "/whoami", "leaver").json()["name"] == "leaver"
    assert team.api("GET", "/commands", "leaver").status_code == 200  # both have it cached now
    if how == "revoke the token":
        (token,) = team.api("GET", f"/operators/{team.ids['leaver']}/tokens").json()["tokens"]
        done = team.api("DELETE", f"/operator-tokens/{token['id']}")
    elif how == "disable the operator":
        done = team.api("PATCH", f"/operators/{team.ids['leaver']}", json={"disabled": True})
    else:
        done = team.api("PATCH", f"/operators/{team.ids['leaver']}", json={"role": "viewer"})
    assert done.status_code in (200, 204), done.text
    started = time.monotonic()
    if how == "make it a viewer":  # still signed in, no longer allowed to queue, in both services
        wait_until(lambda: team.api("POST", "/commands", "leaver", json={}).status_code == 403
                   and team.api("POST", "/registration-tokens", "leaver", json={}).status_code == 403,
                   timeout=8, interval=0.05, what="the narrower role")
    else:
        wait_until(lambda: _refused_by_both(team, "leaver"), timeout=8, interval=0.05, what="the refusal")
    assert time.monotonic() - started < 1.0


def test_every_change_has_exactly_one_event_with_its_actor_target_and_request(team, sql):
    team.add("alice", "admin")
    agent = team.register({"env": "prod"})
    steps = []

    def change(method, path, expect, body=None, target=None):
        rid = f"req-{len(steps)}-{uuid.uuid4().hex[:8]}"
        resp = team.api(method, path, "alice", rid=rid, json=body)
        assert resp.status_code == expect, (path, resp.text)
        out = resp.json() if resp.content else {}
        steps.append((rid, method, path, target or out.get("id")))
        return out

    tok = change("POST", "/registration-tokens", 201, {"max_uses": 2})
    change("DELETE", f"/registration-tokens/{tok['id']}", 204, target=tok["id"])
    bob = change("POST", "/operators", 201, {"name": "bob", "role": "viewer", "password": "p" * 12})
    change("PATCH", f"/operators/{bob['id']}", 200, {"role": "operator"})
    bob_token = change("POST", f"/operators/{bob['id']}/tokens", 201, {"expires_in_s": 600})
    change("DELETE", f"/operator-tokens/{bob_token['id']}", 204, target=bob_token["id"])
    command = change("POST", "/commands", 201, {"agent_id": agent, "type": "ping"})
    change("POST", f"/commands/{command['id']}/cancel", 200)
    job = change("POST", "/jobs", 201, {"selector": {"all_active": True}, "command": {"type": "ping"}})
    change("POST", f"/jobs/{job['id']}/cancel", 200)
    change("DELETE", f"/agents/{agent}", 204, target=agent)
    for rid, method, path, target in steps:
        found = sql.execute("SELECT actor_name, actor_type, target_id, outcome, source_ip FROM audit_events "
                            "WHERE request_id = %s", (rid,)).fetchall()
        assert len(found) == 1, (method, path, found)
        assert found[0][:4] == ("alice", "operator", str(target), "ok"), (method, path, found)
        assert found[0][4] == "127.0.0.1"
    # The trail as the API shows it, newest first and filtered.
    listed = team.api("GET", "/audit", "alice", params={"actor": "alice", "limit": 100}).json()["events"]
    assert [e["request_id"] for e in listed if e["outcome"] == "ok"] == [s[0] for s in reversed(steps)]
    secret_free = team.api("GET", "/audit", params={"action": "operator.create"}).text
    assert "p" * 12 not in secret_free and bob_token["token"] not in str(listed)
    # A read is not a change: no event.
    before = sql.execute("SELECT count(*) FROM audit_events").fetchone()[0]
    team.api("GET", "/commands", "alice"), team.api("GET", "/agents", "alice")
    assert sql.execute("SELECT count(*) FROM audit_events").fetchone()[0] == before


def test_the_bootstrap_token_is_the_audited_bootstrap_operator(team, sql):
    who = team.api("GET", "/whoami").json()
    assert (who["name"], who["role"]) == ("bootstrap", "admin")
    team.api("POST", "/registration-tokens", json={"max_uses": 1})
    assert sql.execute("SELECT actor_type, actor_name FROM audit_events").fetchall() == [("bootstrap", "bootstrap")]
    patched = team.api("PATCH", f"/operators/{who['id']}", json={"role": "viewer"})
    assert patched.status_code == 409, patched.text


def test_an_operator_may_manage_only_its_own_tokens(team):
    team.add("alice", "operator")
    team.add("bob", "operator")
    mine = team.api("POST", f"/operators/{team.ids['alice']}/tokens", "alice", json={"expires_in_s": 600})
    assert mine.status_code == 201
    for method, path in (("POST", f"/operators/{team.ids['alice']}/tokens"),
                         ("GET", f"/operators/{team.ids['alice']}/tokens"),
                         ("DELETE", f"/operator-tokens/{mine.json()['id']}")):
        resp = team.api(method, path, "bob", json={} if method == "POST" else None)
        assert resp.status_code == 403, (method, path, resp.text)
    listed = team.api("GET", f"/operators/{team.ids['alice']}/tokens", "alice").json()["tokens"]
    assert len(listed) == 2 and all("token" not in t and "last_used_at" in t for t in listed)
