"""Live output end to end, through the gateway with a real agent: a command's lines arrive
while it runs, a held reader costs no statement while parked, 5 MiB arrive whole (the result
keeps its last 64 KiB), past the cap the stream says `truncated` and the result still has
the end, and chunks replayed or out of order never corrupt the stream."""

from __future__ import annotations

import sys
import time

import pytest

from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.support import HTTP, metric

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TICKING = ["sh", "-c", "for i in $(seq 1 15); do echo line $i; sleep 0.2; done"]
# 655,360 lines of 8 bytes: exactly 5 MiB.
FIVE_MIB = [sys.executable, "-c", "import sys; sys.stdout.write(''.join('%07d\\n' % i for i in range(655360)))"]


def _read(stack, cid, offset=0, wait=0, timeout=90):
    resp = HTTP.get(f"{stack.url}/api/v1/admin/commands/{cid}/output", params={"offset": offset, "wait": wait},
                    headers=ADMIN, timeout=timeout)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _whole(stack, cid) -> tuple[str, dict]:
    """Every page from the start until the stream is complete."""
    text, offset = [], 0
    while True:
        page = _read(stack, cid, offset, wait=30)
        assert page["offset"] == offset
        text.append(page["data"])
        offset = page["next_offset"]
        if page["complete"]:
            return "".join(text), page


def test_lines_arrive_while_the_command_runs_and_the_follower_costs_nothing_parked(fleet_stack):
    fleet_stack.agent("a1")
    agent_id = fleet_stack.agent_id()
    cid = fleet_stack.queue(agent_id, "shell", params={"argv": TICKING, "timeout_s": 30})["id"]
    fleet_stack.wait_status(cid, {"running"})
    first = _read(fleet_stack, cid, 0, wait=30)
    assert first["data"].startswith("line 1\n") and not first["complete"]
    assert fleet_stack.command(cid)["status"] == "running"  # seen before the command ended
    text, last = _whole(fleet_stack, cid)
    assert text == "".join(f"line {i}\n" for i in range(1, 16))
    assert last["truncated"] is False
    assert fleet_stack.wait_status(cid, {"succeeded"})["result"]["output"] == text

    # A reader held on a command that prints nothing runs one read, then none while parked.
    dispatch = fleet_stack.services["dispatch"].url
    quiet = fleet_stack.queue(agent_id, "shell", params={"argv": ["sleep", "4"], "timeout_s": 30})["id"]
    fleet_stack.wait_status(quiet, {"running"})
    before = metric(dispatch, "fleetline_output_reads_total")
    started = time.monotonic()
    page = _read(fleet_stack, quiet, 0, wait=60)
    assert page["complete"] and page["data"] == ""
    assert time.monotonic() - started < 15  # woken by the result, not by its 60 s deadline
    assert metric(dispatch, "fleetline_output_reads_total") - before == 2  # parked: none


def test_five_mib_arrive_whole_and_the_result_keeps_the_last_64_kib(fleet_stack):
    fleet_stack.agent("a1")
    agent_id = fleet_stack.agent_id()
    cid = fleet_stack.queue(agent_id, "shell", params={"argv": FIVE_MIB, "timeout_s": 120})["id"]
    text, last = _whole(fleet_stack, cid)
    expected = "".join("%07d\n" % i for i in range(655360))
    assert len(text) == 5 * 1024 * 1024 and text == expected and not last["truncated"]
    result = fleet_stack.wait_status(cid, {"succeeded"})["result"]["output"]
    assert len(result.encode()) <= 64 * 1024 and expected.endswith(result.split("\n", 1)[1])


@pytest.mark.parametrize("stack_env", [{"FLEETLINE_MAX_OUTPUT_BYTES": "100000"}])
def test_past_the_cap_the_stream_is_truncated_and_the_result_still_has_the_end(fleet_stack, sql):
    fleet_stack.agent("a1")
    agent_id = fleet_stack.agent_id()
    argv = [sys.executable, "-c", "import sys; sys.stdout.write(''.join('%07d\\n' % i for i in range(50000)))"]
    cid = fleet_stack.queue(agent_id, "shell", params={"argv": argv, "timeout_s": 60})["id"]
    text, last = _whole(fleet_stack, cid)
    assert last["truncated"] and len(text) == 100000
    assert text == "".join("%07d\n" % i for i in range(50000))[:100000]
    assert fleet_stack.wait_status(cid, {"succeeded"})["result"]["output"].endswith("0049999\n")
    assert sql.execute("SELECT output_bytes, output_truncated FROM commands WHERE id = %s",
                       (cid,)).fetchone() == (100000, True)


def test_chunks_replayed_reordered_or_with_gaps_answer_as_the_api_says(fleet_stack, sql):
    """The agent's side of the wire, by hand: a registered agent's own token."""
    from tests.integration.conftest import create_registration_token, register

    token = create_registration_token(fleet_stack.url)["token"]
    me = register(fleet_stack.url, token, "m-chunks").json()
    headers = {"Authorization": f"Bearer {me['access_token']}", "X-Machine-ID": "m-chunks"}
    base = f"{fleet_stack.url}/api/v1/agents/{me['agent_id']}/commands"
    cid = fleet_stack.queue(me["agent_id"], "ping")["id"]
    url = f"{base}/{cid}/output"
    early = HTTP.post(url, headers=headers, json={"offset": 0, "data": "too early"})
    assert (early.status_code, early.json()["error"]) == (409, "conflict")  # not running yet
    assert [c["id"] for c in HTTP.get(base, headers=headers).json()["commands"]] == [cid]
    assert HTTP.post(f"{base}/{cid}/ack", headers=headers).json()["status"] == "running"

    def send(offset, data):
        return HTTP.post(url, headers=headers, json={"offset": offset, "data": data})

    assert send(0, "one\n").json() == {"next_offset": 4, "truncated": False}
    gap = send(8, "three\n")
    assert (gap.status_code, gap.json()["expected_offset"]) == (409, 4)
    assert send(0, "one\n").status_code == 200  # replayed: no-op
    bad = send(0, "ONE\ntwo\n")
    assert (bad.status_code, bad.json()["expected_offset"]) == (409, 4)
    assert send(4, "two\n").json()["next_offset"] == 8
    for hostile in ({"offset": -1, "data": "x"}, {"offset": 0, "data": "nul\u0000"}, {"offset": 1.5, "data": "x"},
                    {"offset": 0}, {"offset": 0, "data": "x" * (64 * 1024 + 1)}, {"offset": True, "data": "x"}):
        r = HTTP.post(url, headers=headers, json=hostile)
        assert (r.status_code, r.json()["error"]) == (400, "invalid_request"), hostile
    other = fleet_stack.queue(me["agent_id"], "ping")["id"]
    stranger = HTTP.post(f"{base}/{other}x/output", headers=headers, json={"offset": 0, "data": "x"})
    assert stranger.status_code == 404
    assert _read(fleet_stack, cid)["data"] == "one\ntwo\n"
    for query in ({"offset": -1}, {"offset": "abc"}, {"wait": 61}, {"wait": "1e3"}, {"offset": "\u0661"}):
        r = HTTP.get(f"{fleet_stack.url}/api/v1/admin/commands/{cid}/output", params=query, headers=ADMIN)
        assert (r.status_code, r.json()["error"]) == (400, "invalid_request"), query
    assert sql.execute("SELECT count(*) FROM command_output WHERE command_id = %s", (cid,)).fetchone()[0] == 2


def test_the_cli_follows_a_command_and_a_jobs_target_line_by_line_with_escapes_defused(fleet_stack, tmp_path):
    import os
    import subprocess

    from tests.integration.support import ROOT

    fleet_stack.agent("a1")
    agent_id = fleet_stack.agent_id()
    env = {**os.environ, "FLEETLINE_URL": fleet_stack.url, "FLEETLINE_TOKEN": ADMIN_TOKEN}
    argv = ["sh", "-c", "printf 'title\\033]0;pwned\\007\\n'; for i in $(seq 1 10); do echo tick $i; sleep 0.3; done"]
    job = fleet_stack.api("POST", "/jobs", json={"selector": {"agent_ids": [agent_id]},
                                                "command": {"type": "shell", "params": {"argv": argv}}}).json()
    cli = subprocess.Popen([sys.executable, "-m", "fleetline", "jobs", "logs", job["id"], "--agent", agent_id,
                            "--follow"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = cli.stdout.readline()
    assert first == "title\\x1b]0;pwned\\x07\n"  # the terminal sees text, not an escape sequence
    assert cli.stdout.readline() == "tick 1\n"
    assert fleet_stack.api("GET", f"/jobs/{job['id']}").json()["status"] == "running"  # still running: live
    rest = cli.stdout.read()  # to the end: the CLI exits when the command ends
    assert cli.wait(30) == 0, cli.stderr.read()
    assert rest == "".join(f"tick {i}\n" for i in range(2, 11))
    command_id = fleet_stack.api("GET", f"/jobs/{job['id']}/targets").json()["targets"][0]["command_id"]
    again = subprocess.run([sys.executable, "-m", "fleetline", "commands", "logs", command_id], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.stdout == first + "".join(f"tick {i}\n" for i in range(1, 11))


def test_an_operator_holds_at_most_20_output_reads_at_once_and_others_are_unaffected(fleet_stack):
    """One viewer held 1,930 reads open at once (tens of KiB each in the gateway and in
    dispatch); now the 21st is 429 with Retry-After, for that operator only."""
    import asyncio

    import httpx

    from tests.integration.conftest import create_registration_token, register
    from tests.integration.support import wait_until

    me = register(fleet_stack.url, create_registration_token(fleet_stack.url)["token"], "m-held").json()
    headers = {"Authorization": f"Bearer {me['access_token']}", "X-Machine-ID": "m-held"}
    cid = fleet_stack.queue(me["agent_id"], "ping")["id"]
    HTTP.get(f"{fleet_stack.url}/api/v1/agents/{me['agent_id']}/commands", headers=headers)
    assert HTTP.post(f"{fleet_stack.url}/api/v1/agents/{me['agent_id']}/commands/{cid}/ack",
                     headers=headers).json()["status"] == "running"  # and stays so: nothing more comes
    viewers = []
    for name in ("watcher", "other"):
        made = fleet_stack.api("POST", "/operators", json={"name": name, "role": "viewer"}).json()
        token = fleet_stack.api("POST", f"/operators/{made['id']}/tokens", json={}).json()["token"]
        viewers.append({"Authorization": f"Bearer {token}"})
    dispatch = fleet_stack.services["dispatch"].url
    url = f"{fleet_stack.url}/api/v1/admin/commands/{cid}/output"

    async def hold() -> tuple[list[int], httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as client:
            held = [asyncio.create_task(client.get(url, params={"wait": 8}, headers=viewers[0])) for _ in range(20)]
            await asyncio.to_thread(wait_until, lambda: metric(dispatch, "fleetline_output_followers") == 20, 10)
            refused = await client.get(url, params={"wait": 8}, headers=viewers[0])
            someone_else = await client.get(url, params={"wait": 1}, headers=viewers[1])
            return [r.status_code for r in await asyncio.gather(*held)], refused, someone_else

    statuses, refused, someone_else = asyncio.run(hold())
    assert statuses == [200] * 20
    assert (refused.status_code, refused.json()["error"]) == (429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    assert someone_else.status_code == 200
    # Their places freed, it follows again; a read that does not wait is never counted.
    assert HTTP.get(url, params={"wait": 1}, headers=viewers[0]).status_code == 200
    assert metric(dispatch, "fleetline_output_followers") == 0
