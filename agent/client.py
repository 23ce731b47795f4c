"""The agent's view of the HTTP API, with failures sorted by what the agent does next."""

from __future__ import annotations

import json
from typing import Iterator

import httpx

from agent import __version__
from agent.timing import parse_retry_after
from fleetline.transport import tls_context


class Retryable(Exception):
    """Connection error, 5xx or 429: back off and try again (a 429 when it says)."""

    def __init__(self, reason: str, retry_after: float | None = None, rate_limited: bool = False):
        super().__init__(reason)
        self.retry_after, self.rate_limited = retry_after, rate_limited


class Unauthorized(Exception):
    """401: the credential is no longer accepted (`code` says why: `token_reused` means
    the refresh token's family was revoked)."""

    def __init__(self, detail: str, code: str = "invalid_token"):
        super().__init__(detail)
        self.code = code


class Refused(Exception):
    """Any other 4xx: final for this request."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


# The largest answer the agent reads: a poll of 100 commands with 64 KiB params each fits.
MAX_ANSWER_BYTES = 16 * 1024 * 1024


def _read_capped(resp: httpx.Response) -> bytes | None:
    """The body, or None when it is larger than MAX_ANSWER_BYTES (not read any further)."""
    data = bytearray()
    for chunk in resp.iter_bytes():
        data += chunk
        if len(data) > MAX_ANSWER_BYTES:
            return None
    return bytes(data)


def poll_answer_problem(body: dict) -> str | None:
    """What is wrong with a poll answer, or None. A malformed answer is logged and retried
    like a server error; it never reaches the command handling (or stops the agent)."""
    interval = body.get("poll_interval_s")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval <= 86400:
        return "poll_interval_s is not a number of seconds"
    commands = body.get("commands")
    if not isinstance(commands, list):
        return "commands is not a list"
    cancels = body.get("cancels", [])  # a server before 1.3 sends none
    if not isinstance(cancels, list) or not all(
            isinstance(c, dict) and isinstance(c.get("command_id"), str) for c in cancels):
        return "cancels is not a list of cancels"
    for c in commands:
        if not isinstance(c, dict) or not isinstance(c.get("id"), str) or not c["id"]:
            return "a command without an id"
        if not isinstance(c.get("type"), str) or not isinstance(c.get("params", {}), dict):
            return f"command {c['id'][:36]} has no type or params object"
        timeout = c.get("run_timeout_s", 3600)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            return f"command {c['id'][:36]} has no valid run_timeout_s"
    return None


class Client:
    def __init__(self, server: str, machine_id: str, timeout_s: float = 30.0, ca_file: str | None = None):
        self.machine_id = machine_id
        # Over https the server's certificate is verified: against the CA file given, else
        # the system trust store. No setting turns verification off.
        self.http = httpx.Client(base_url=server.rstrip("/"), timeout=timeout_s, verify=tls_context(ca_file),
                                 headers={"User-Agent": f"fleetline-agent/{__version__}"})

    def _call(self, method: str, path: str, token: str | None = None, timeout: float | None = None,
              **kw) -> dict:
        headers = {"X-Machine-ID": self.machine_id}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            with self.http.stream(method, path, headers=headers,
                                  timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                                  **kw) as resp:
                raw = _read_capped(resp)
        except httpx.HTTPError as exc:
            raise Retryable(f"{type(exc).__name__}: {exc}") from None
        if raw is None:
            raise Retryable(f"HTTP {resp.status_code} answer over {MAX_ANSWER_BYTES} bytes")
        if resp.status_code == 429 or resp.status_code >= 500:
            raise Retryable(f"HTTP {resp.status_code}", parse_retry_after(resp.headers.get("retry-after")),
                            rate_limited=resp.status_code == 429)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            if resp.status_code < 400:
                raise Retryable(f"HTTP {resp.status_code} without a JSON object")
            body = {}
        if resp.status_code == 401:
            raise Unauthorized(str(body.get("detail", "unauthorized")), str(body.get("error", "invalid_token")))
        if resp.status_code >= 400:
            raise Refused(resp.status_code, body.get("error", "error"), body.get("detail", ""))
        return body

    def register(self, registration_token: str, facts: dict) -> dict:
        return self._call("POST", "/api/v1/agents/register",
                          json={"registration_token": registration_token, "machine_id": self.machine_id, **facts})

    def renew(self, agent_id: str, refresh_token: str) -> dict:
        return self._call("POST", "/api/v1/agents/renew",
                          json={"agent_id": agent_id, "refresh_token": refresh_token})

    def poll(self, token: str, agent_id: str, limit: int = 10, wait: int = 0, cancels_only: bool = False) -> dict:
        params: dict = {"limit": limit, "wait": wait}
        if cancels_only:
            params["cancels_only"] = "true"
        body = self._call("GET", f"/api/v1/agents/{agent_id}/commands", token, params=params,
                          timeout=30.0 + wait)
        problem = poll_answer_problem(body)
        if problem:
            raise Retryable(f"malformed poll answer: {problem}")
        return body

    def keyset(self, token: str) -> dict:
        return self._call("GET", "/api/v1/agents/keyset", token)

    def ack(self, token: str, agent_id: str, command_id: str) -> dict:
        return self._call("POST", f"/api/v1/agents/{agent_id}/commands/{command_id}/ack", token)

    def result(self, token: str, agent_id: str, command_id: str, result: dict) -> dict:
        return self._call("POST", f"/api/v1/agents/{agent_id}/commands/{command_id}/result", token, json=result)

    def put_facts(self, token: str, agent_id: str, facts: dict) -> dict:
        return self._call("PUT", f"/api/v1/agents/{agent_id}/facts", token, json={"facts": facts})

    def download(self, path: str) -> Iterator[bytes]:
        """A release's bytes as they arrive (no authentication: releases are not secrets;
        the signed command carries their digest). OSError for anything but a 200."""
        try:
            with self.http.stream("GET", path, timeout=httpx.Timeout(30.0, read=60.0)) as resp:
                if resp.status_code != 200:
                    raise OSError(f"HTTP {resp.status_code} from {path}")
                yield from resp.iter_bytes()
        except httpx.HTTPError as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from None

    def output(self, token: str, agent_id: str, command_id: str, offset: int, data: str) -> dict:
        return self._call("POST", f"/api/v1/agents/{agent_id}/commands/{command_id}/output", token,
                          json={"offset": offset, "data": data})
