"""Facts and `where` through the gateway with real agents (docs/api.md, facts, labels and
selectors): each agent reports its machine's facts and the JSON files of its facts
directory at start; a `where` dry run names exactly the machines it means, and a job and a
schedule with that selector reach only them; facts of hostile shape are refused, and a
`where` value that looks like SQL matches nothing and changes nothing."""

from __future__ import annotations

import json
import os
import platform

from tests.integration.conftest import ADMIN_TOKEN, create_registration_token, register
from tests.integration.dbstate import snapshot
from tests.integration.support import HTTP, wait_until
from tests.integration.test_cli import fleetline


def _agents_with_facts(fleet_stack, tmp_path) -> dict[str, str]:
    """Three agents, each with a custom fact file: name -> agent id, once every one reported."""
    ids = {}
    for name, tier in (("web1", "web"), ("web2", "web"), ("db1", "db")):
        facts_dir = tmp_path / f"{name}-facts.d"
        facts_dir.mkdir()
        (facts_dir / "role.json").write_text(json.dumps({"tier": tier, "disks": [{"free_gb": 3 if tier == "db" else 50}]}))
        (facts_dir / "broken.json").write_text("{not json")  # left out, said in the log
        fleet_stack.agent(name, extra_args=["--facts-dir", str(facts_dir)])
        ids[name] = fleet_stack.agent_id(name)
    for agent_id in ids.values():
        wait_until(lambda a=agent_id: fleet_stack.api("GET", f"/agents/{a}").json()["facts_updated_at"], 30, 0.1,
                   "the agent's facts")
    return ids


def test_agents_report_their_facts_and_where_names_exactly_the_machines_it_means(fleet_stack, tmp_path):
    ids = _agents_with_facts(fleet_stack, tmp_path)
    agent = fleet_stack.api("GET", f"/agents/{ids['db1']}").json()
    facts = agent["facts"]
    assert facts["cpu_count"] == os.cpu_count() and facts["arch"] == platform.machine()
    assert facts["memory_mb"] > 0 and facts["os"]["family"] and facts["kernel"] == platform.release()
    assert any(d["mount"] == "/" for d in facts["disks"]) and facts["disk_free_gb"] > 0
    assert facts["custom"] == {"role": {"tier": "db", "disks": [{"free_gb": 3}]}}  # broken.json left out
    # Seen: last_seen_at is written in batches (every few seconds), and online follows it.
    assert wait_until(lambda: fleet_stack.api("GET", f"/agents/{ids['db1']}").json()["online"], 20, 0.2,
                      "the agent online")

    def dry_run(where: str) -> dict:
        r = fleet_stack.api("POST", "/jobs", json={"selector": {"where": where}, "command": {"type": "ping"},
                                                   "dry_run": True})
        assert r.status_code in (200, 400), r.text
        return r.json()

    named = dry_run("facts.custom.role.tier = db")
    assert named["target_count"] == 1 and [t["agent_id"] for t in named["targets"]] == [ids["db1"]]
    assert dry_run(f"facts.cpu_count >= 1, facts.os.family = {facts['os']['family']}")["target_count"] == 3
    assert dry_run("facts.custom.role.disks.free_gb < 5")["targets"][0]["agent_id"] == ids["db1"]
    assert dry_run("facts.custom.role.tier notin (db), !facts.custom.missing")["target_count"] == 2
    refused = dry_run("facts.custom.role.tier = db AND 1=1")
    assert refused["field"] == "selector.where" and "position" in refused["detail"]

    job = fleet_stack.api("POST", "/jobs", json={"selector": {"where": "facts.custom.role.tier = web"},
                                                  "command": {"type": "ping"}}).json()
    assert job["target_count"] == 2
    targets = fleet_stack.api("GET", f"/jobs/{job['id']}/targets").json()["targets"]
    assert sorted(t["agent_id"] for t in targets) == sorted([ids["web1"], ids["web2"]])

    env = {"FLEETLINE_URL": fleet_stack.url, "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN}
    shown = fleetline("jobs", "run", "--where", "facts.custom.role.tier = db", "--type", "ping", "--dry-run", env=env)
    assert shown.returncode == 0 and "1 targets" in shown.stdout and ids["db1"] in shown.stdout, shown.stderr
    listed = fleetline("agents", "list", "--where", "facts.custom.role.tier = web", "--json", env=env)
    assert sorted(a["id"] for a in json.loads(listed.stdout)["agents"]) == sorted([ids["web1"], ids["web2"]])

    made = fleet_stack.api("POST", "/schedules", json={
        "name": "db-only", "selector": {"where": "facts.custom.role.tier = db"}, "command": {"type": "ping"},
        "interval_s": 3600})
    assert made.status_code == 201, made.text
    started = fleet_stack.api("POST", f"/schedules/{made.json()['id']}/run-now").json()
    assert started["target_count"] == 1

    # Asked for, fresh facts arrive at once (the agent's held poll wakes), custom ones read again.
    (tmp_path / "db1-facts.d" / "role.json").write_text(json.dumps({"tier": "db", "moved": True}))
    asked = fleet_stack.api("POST", f"/agents/{ids['db1']}/refresh-facts")
    assert asked.status_code == 202, asked.text
    wait_until(lambda: fleet_stack.api("GET", f"/agents/{ids['db1']}").json()["facts"]["custom"]["role"].get("moved"),
               10, 0.1, "the refreshed facts")


def test_facts_of_hostile_shape_are_refused_and_where_values_stay_values(fleet_stack, sql):
    token = create_registration_token(fleet_stack.url)["token"]
    reg = register(fleet_stack.url, token, "machine-facts").json()
    url = f"{fleet_stack.url}/api/v1/agents/{reg['agent_id']}/facts"
    headers = {"Authorization": f"Bearer {reg['access_token']}", "X-Machine-ID": "machine-facts"}
    deep: dict = {}
    inner = deep
    for _ in range(9):
        inner["x"] = {}
        inner = inner["x"]
    before = snapshot(sql)
    for body, why in [({"facts": deep}, "8 deep"), ({"facts": {"big": "x" * 70_000}}, "bytes"),
                      ({"facts": {"nul": "a\u0000b"}}, "NUL"), ({"facts": ["not", "an", "object"]}, "object"),
                      ({}, "required")]:
        r = HTTP.put(url, json=body, headers=headers)
        assert r.status_code == 400 and r.json()["field"] == "facts" and why in r.json()["detail"], (why, r.text)
    assert snapshot(sql) == before
    odd = {"name": "\x1b[31mred\x1b[0m <b>bold</b>", "list": [1, "two", None, True]}
    stored = HTTP.put(url, json={"facts": odd}, headers=headers)
    assert stored.status_code == 200 and stored.json()["facts_updated_at"]
    assert fleet_stack.api("GET", f"/agents/{reg['agent_id']}").json()["facts"] == odd  # data, as given
    env = {"FLEETLINE_URL": fleet_stack.url, "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN}
    shown = fleetline("agents", "show", reg["agent_id"], env=env)
    assert "\x1b" not in shown.stdout  # a terminal escape is shown, not obeyed

    before = snapshot(sql)
    for where in ('facts.name = "x\'; DELETE FROM agents; --"', "labels.env in (\"') OR 1=1 --\")",
                  'facts.name = "$1"'):
        r = fleet_stack.api("POST", "/jobs", json={"selector": {"where": where}, "command": {"type": "ping"},
                                                   "dry_run": True})
        assert r.status_code == 400 and "no active agent" in r.json()["detail"].lower(), (where, r.text)
    assert snapshot(sql) == before


def test_an_operator_label_moves_an_agent_into_a_selector_without_enrolling_it_again(fleet_stack, sql):
    from tests.integration.test_operators import Team

    token = create_registration_token(fleet_stack.url, max_uses=2)["token"]
    web = HTTP.post(f"{fleet_stack.url}/api/v1/agents/register", json={
        "registration_token": token, "machine_id": "m-web", "hostname": "web",
        "labels": {"env": "staging", "role": "web"}}).json()["agent_id"]
    other = HTTP.post(f"{fleet_stack.url}/api/v1/agents/register", json={
        "registration_token": token, "machine_id": "m-db", "hostname": "db",
        "labels": {"env": "staging", "role": "db"}}).json()["agent_id"]

    def prod_targets() -> int:
        r = fleet_stack.api("POST", "/jobs", json={"selector": {"labels": {"env": "prod"}},
                                                   "command": {"type": "ping"}, "dry_run": True})
        return r.json().get("target_count", 0)

    assert prod_targets() == 0
    moved = fleet_stack.api("PATCH", f"/agents/{web}", json={"labels": {"env": "prod", "tier": "front"}}).json()
    assert moved["labels"] == {"env": "prod", "role": "web", "tier": "front"}
    assert moved["agent_labels"] == {"env": "staging", "role": "web"}
    assert moved["operator_labels"] == {"env": "prod", "tier": "front"}
    assert prod_targets() == 1  # the same agent, not enrolled again
    assert sql.execute("SELECT count(*) FROM agents").fetchone() == (2,)
    env = {"FLEETLINE_URL": fleet_stack.url, "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN}
    back = fleetline("agents", "label", web, "env-", "--json", env=env)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["labels"]["env"] == "staging" and prod_targets() == 0
    again = fleetline("agents", "label", web, "env=prod", "--json", env=env)
    assert json.loads(again.stdout)["operator_labels"]["env"] == "prod"
    assert fleetline("agents", "label", web, "nonsense", env=env).returncode == 1
    fleet_stack.api("PATCH", f"/agents/{web}", json={"labels": {"env": None}})

    team = Team(fleet_stack.url)
    team.add("webops", "operator", {"labels": {"role": "web"}, "command_types": ["*"]})
    own = team.api("PATCH", f"/agents/{web}", "webops", json={"labels": {"role": "db"}})
    assert own.status_code == 403 and "scope" in own.json()["detail"]  # it would move the agent out of reach
    assert team.api("PATCH", f"/agents/{web}", "webops", json={"labels": {"tier": "edge"}}).status_code == 200
    assert team.api("PATCH", f"/agents/{other}", "webops", json={"labels": {"tier": "x"}}).status_code == 404
    for bad in ({"labels": {}}, {"labels": {"": "x"}}, {"labels": {"k": 5}}, {"labels": "env=prod"}, {}):
        r = fleet_stack.api("PATCH", f"/agents/{web}", json=bad)
        assert r.status_code == 400 and r.json()["field"].startswith("labels"), (bad, r.text)
    events = sql.execute("SELECT actor_name, outcome FROM audit_events WHERE action = 'agent.label' "
                         "ORDER BY at").fetchall()
    assert events == [("bootstrap", "ok")] * 4 + [("webops", "forbidden"), ("webops", "ok")]
