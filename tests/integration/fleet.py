"""Drive a running auth + dispatch pair the way operators and agents do."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

import httpx

from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.support import HTTP, held_polls, wait_until

_machines = itertools.count()


@dataclass
class Agent:
    agent_id: str
    machine_id: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.access_token}", "X-Machine-ID": self.machine_id}


class Fleet:
    def __init__(self, auth_url: str, dispatch_url: str):
        self.auth_url, self.dispatch_url = auth_url, dispatch_url
        self.admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def register(self, machine_id: str | None = None, labels: dict | None = None) -> Agent:
        machine_id = machine_id or f"machine-{next(_machines)}"
        tok = HTTP.post(f"{self.auth_url}/api/v1/admin/registration-tokens", json={"max_uses": 1},
                         headers=self.admin).json()
        resp = HTTP.post(f"{self.auth_url}/api/v1/agents/register",
                          json={"registration_token": tok["token"], "machine_id": machine_id,
                                "hostname": f"host-{machine_id}", "labels": labels or {}})
        assert resp.status_code == 201, resp.text
        body = self.registration = resp.json()
        return Agent(body["agent_id"], machine_id, body["access_token"], body["refresh_token"])

    def queue(self, agent: Agent, expect: int = 201, **fields) -> dict:
        body = {"agent_id": agent.agent_id, "type": "ping"}
        body.update(fields)
        resp = HTTP.post(f"{self.dispatch_url}/api/v1/admin/commands", json=body, headers=self.admin)
        assert resp.status_code == expect, resp.text
        return resp.json()

    def poll(self, agent: Agent, limit: int = 10, wait: int = 0, expect: int = 200,
             path_agent: str | None = None) -> dict:
        resp = HTTP.get(f"{self.dispatch_url}/api/v1/agents/{path_agent or agent.agent_id}/commands",
                         params={"limit": limit, "wait": wait}, headers=agent.headers, timeout=90)
        assert resp.status_code == expect, resp.text
        return resp.json()

    def ack(self, agent: Agent, command_id: str) -> httpx.Response:
        return HTTP.post(f"{self.dispatch_url}/api/v1/agents/{agent.agent_id}/commands/{command_id}/ack",
                          headers=agent.headers)

    def result(self, agent: Agent, command_id: str, status: str = "succeeded",
               exit_code: int = 0, output: str = "ok") -> httpx.Response:
        return HTTP.post(
            f"{self.dispatch_url}/api/v1/agents/{agent.agent_id}/commands/{command_id}/result",
            headers=agent.headers,
            json={"status": status, "exit_code": exit_code, "output": output,
                  "started_at": "2026-11-27T10:00:00Z", "finished_at": "2026-11-27T10:00:01Z"})

    def command(self, command_id: str) -> dict:
        resp = HTTP.get(f"{self.dispatch_url}/api/v1/admin/commands/{command_id}", headers=self.admin)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def admin_call(self, method: str, path: str, expect: int = 200, **kw) -> dict:
        resp = HTTP.request(method, f"{self.dispatch_url}/api/v1/admin{path}", headers=self.admin,
                             timeout=60, **kw)
        assert resp.status_code == expect, resp.text
        return resp.json()

    def run_job(self, selector: dict, expect: int = 201, **fields) -> dict:
        body = {"selector": selector, "command": {"type": "ping"}, **fields}
        return self.admin_call("POST", "/jobs", expect, json=body)

    def job(self, job_id: str) -> dict:
        return self.admin_call("GET", f"/jobs/{job_id}")

    def targets(self, job_id: str, **params) -> list[dict]:
        return self.admin_call("GET", f"/jobs/{job_id}/targets", params=params)["targets"]

    def cancel(self, command_id: str) -> httpx.Response:
        return HTTP.post(f"{self.dispatch_url}/api/v1/admin/commands/{command_id}/cancel",
                          headers=self.admin)

    def hold(self, agent: Agent, wait: int = 30, expect: int = 200) -> "HeldPoll":
        """A long poll held in a background thread."""
        return HeldPoll(self, agent, wait, expect)

    def queue_to_held_poll(self, agent: Agent) -> float:
        """Queue a command while a poll of the agent is parked; the seconds until that poll
        answered with it."""
        held = self.hold(agent)
        wait_until(lambda: held_polls(self.dispatch_url) == 1, 10, what="the poll to park")
        queued = time.time()
        cmd = self.queue(agent)
        body = held.join()
        assert [c["id"] for c in body["commands"]] == [cmd["id"]]
        return held.answered_at - queued


class HeldPoll:
    def __init__(self, fleet: Fleet, agent: Agent, wait: int, expect: int = 200):
        self.body: dict | None = None
        self.answered_at = 0.0  # time.time(), comparable with the database's stamps

        def hold() -> None:
            self.body = fleet.poll(agent, wait=wait, expect=expect)
            self.answered_at = time.time()

        self._thread = threading.Thread(target=hold)
        self._thread.start()

    def join(self, timeout: float = 70) -> dict:
        self._thread.join(timeout)
        assert self.body is not None, "the held poll did not answer"
        return self.body
