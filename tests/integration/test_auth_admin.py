"""Operator endpoints of auth, and what an operator's secrets look like at rest."""

import subprocess

from fleetline.cli.pgembed import postgres_bin
from tests.integration.conftest import ADMIN_TOKEN, create_registration_token, register
from tests.integration.support import HTTP


def test_registration_token_lifecycle(auth, admin_headers):
    created = create_registration_token(auth.url, max_uses=3, expires_in_s=3600, note="rack 7")
    assert set(created) >= {"id", "token", "max_uses", "uses", "expires_at", "note", "created_at"}
    assert (created["max_uses"], created["uses"], created["note"]) == (3, 0, "rack 7")
    register(auth.url, created["token"], "m-1")
    listed = HTTP.get(f"{auth.url}/api/v1/admin/registration-tokens", headers=admin_headers).json()
    (row,) = listed["tokens"]
    assert "token" not in row and row["uses"] == 1 and row["revoked_at"] is None
    url = f"{auth.url}/api/v1/admin/registration-tokens/{created['id']}"
    assert HTTP.delete(url, headers=admin_headers).status_code == 204
    assert HTTP.delete(url, headers=admin_headers).status_code == 204  # idempotent
    listed = HTTP.get(f"{auth.url}/api/v1/admin/registration-tokens", headers=admin_headers).json()
    assert listed["tokens"][0]["revoked_at"] is not None


def test_agents_list_show_and_revoke(auth, admin_headers, sql):
    tok = create_registration_token(auth.url, max_uses=2)
    a = register(auth.url, tok["token"], "m-a", hostname="web-a").json()
    register(auth.url, tok["token"], "m-b", hostname="web-b")
    agents = HTTP.get(f"{auth.url}/api/v1/admin/agents", headers=admin_headers).json()["agents"]
    assert {x["hostname"] for x in agents} == {"web-a", "web-b"}
    one = HTTP.get(f"{auth.url}/api/v1/admin/agents/{a['agent_id']}", headers=admin_headers).json()
    assert set(one) >= {"id", "hostname", "os", "arch", "agent_version", "labels", "status",
                        "created_at", "last_seen_at"}
    assert (one["status"], one["labels"], one["os"]) == ("active", {"env": "test"}, "linux")
    assert HTTP.delete(f"{auth.url}/api/v1/admin/agents/{a['agent_id']}",
                        headers=admin_headers).status_code == 204
    one = HTTP.get(f"{auth.url}/api/v1/admin/agents/{a['agent_id']}", headers=admin_headers).json()
    assert one["status"] == "revoked"


def test_database_dump_holds_no_issued_secret(auth, database_url, sql):
    tok = create_registration_token(auth.url, max_uses=2)
    reg = register(auth.url, tok["token"], "m-secret").json()
    dump = subprocess.run([str(postgres_bin() / "pg_dump"), "--data-only", database_url],
                          capture_output=True, check=True, text=True).stdout
    assert "m-secret" in dump  # the dump really holds the data
    for secret in (tok["token"], reg["refresh_token"], reg["access_token"], ADMIN_TOKEN):
        assert secret not in dump
        assert secret.split("_", 1)[-1][:20] not in dump


def test_agents_can_be_listed_in_pages(auth, admin_headers):
    tok = create_registration_token(auth.url, max_uses=5)
    ids = [register(auth.url, tok["token"], f"m-page-{i}").json()["agent_id"] for i in range(5)]
    url = f"{auth.url}/api/v1/admin/agents"
    everything = HTTP.get(url, headers=admin_headers).json()
    assert [a["id"] for a in everything["agents"]] == ids[::-1] and everything["next"] is None
    seen, cursor = [], None
    while True:
        page = HTTP.get(url, headers=admin_headers,
                         params={"limit": 2, **({"before": cursor} if cursor else {})}).json()
        seen += [a["id"] for a in page["agents"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    HTTP.delete(f"{url}/{ids[0]}", headers=admin_headers)
    revoked = HTTP.get(url, headers=admin_headers, params={"status": "revoked"}).json()["agents"]
    assert [a["id"] for a in revoked] == [ids[0]]
    for params, field in [({"limit": 0}, "limit"), ({"before": "zz"}, "before"), ({"status": "gone"}, "status")]:
        resp = HTTP.get(url, headers=admin_headers, params=params)
        assert (resp.status_code, resp.json()["field"]) == (400, field)


def test_agents_can_be_listed_by_label_as_a_job_would_select_them(auth, admin_headers):
    tok = create_registration_token(auth.url, max_uses=3)
    made = {}
    for name, labels in (("web", {"env": "prod", "role": "web"}), ("db", {"env": "prod", "role": "db"}),
                         ("dev", {"env": "dev", "role": "web"})):
        made[name] = HTTP.post(f"{auth.url}/api/v1/agents/register", json={
            "registration_token": tok["token"], "machine_id": f"m-label-{name}", "hostname": name,
            "labels": labels}).json()["agent_id"]
    url = f"{auth.url}/api/v1/admin/agents"

    def listed(*labels: str, **extra) -> set[str]:
        page = HTTP.get(url, headers=admin_headers, params={"label": list(labels), **extra}).json()
        return {a["id"] for a in page["agents"]}

    assert listed("env=prod") == {made["web"], made["db"]}
    assert listed("env=prod", "role=web") == {made["web"]}
    assert listed("role=web", status="active") == {made["web"], made["dev"]}
    assert listed("env=nowhere") == set()
    for bad in ("noequals", "=x"):
        resp = HTTP.get(url, headers=admin_headers, params={"label": bad})
        assert (resp.status_code, resp.json()["field"]) == (400, "label")
