"""The admin API as the command line uses it: one call per request, every refusal or
unreachable server turned into one CliError sentence."""

from __future__ import annotations

from typing import Any

import httpx

from fleetline.transport import tls_context


class CliError(Exception):
    pass


class Api:
    def __init__(self, url: str, token: str, ca_file: str | None = None):
        # Over https the gateway's certificate is verified (the CA file, else the system store).
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=30.0, verify=tls_context(ca_file),
                                   headers={"Authorization": f"Bearer {token}"})
        self.url = url

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the gateway at {self.url}: {exc}") from None
        if resp.status_code == 204:
            return None
        try:
            body = resp.json()
        except ValueError:
            raise CliError(f"unexpected answer from {self.url} (HTTP {resp.status_code})") from None
        if resp.status_code >= 400:
            field = f" [{body['field']}]" if body.get("field") else ""
            raise CliError(f"{body.get('detail', 'refused')}{field} ({body.get('error')}, HTTP {resp.status_code})")
        return body
