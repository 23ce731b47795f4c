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
