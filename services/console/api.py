"""The admin API as the console calls it: through the gateway, with the signed-in
operator's session as the bearer, like the CLI with a token. The console has no database
and no other way in: even sign-in is the API's (auth opens the session).

Every call says which browser it is made for: the console is a proxy the gateway trusts
with that (the console proxy secret, shared by the two), so auth's sign-in limits and
every audit event name the browser's address, never the console's."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import httpx
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from fleetline.transport import tls_context
from services.common.http import client_address

# The address of the browser the request being served came from (BrowserAddress sets it).
BROWSER: ContextVar[str | None] = ContextVar("browser", default=None)
PROXY_HEADER = "Fleetline-Console-Proxy"


class BrowserAddress:
    """Remembers, for the API calls a request makes, which browser it came from."""

    def __init__(self, app: ASGIApp, trusted_proxies: tuple[str, ...]):
        self.app, self.trusted_proxies = app, trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = BROWSER.set(client_address(Request(scope), self.trusted_proxies))
        try:
            await self.app(scope, receive, send)
        finally:
            BROWSER.reset(token)


class Refused(Exception):
    """The API answered 4xx: its JSON error is shown to the operator as it is."""

    def __init__(self, status: int, body: dict):
        super().__init__(body.get("detail", "refused"))
        self.status, self.body = status, body

    @property
    def signed_out(self) -> bool:
        """The session no longer works (signed out, ended, its operator disabled)."""
        return self.status == 401


class Unavailable(Exception):
    """The API could not be reached, or failed (5xx)."""


class AdminApi:
    def __init__(self, base_url: str, ca_file: str | None = None, proxy_secret: str | None = None):
        self.client = httpx.AsyncClient(base_url=base_url, timeout=15.0, follow_redirects=False,
                                        verify=tls_context(ca_file))
        self.proxy_secret = proxy_secret

    async def close(self) -> None:
        await self.client.aclose()

    async def call(self, token: str, method: str, path: str, **kw: Any) -> Any:
        """An admin API call (`path` under /api/v1/admin) as the session `token`."""
        return await self._request(method, f"/api/v1/admin{path}", {"Authorization": f"Bearer {token}"}, **kw)

    async def sign_in(self, body: dict) -> dict:
        """A new session from auth: `{"session", "expires_at", "operator"}`. Refused (401,
        429) when the credential is wrong or too many were."""
        return await self._request("POST", "/api/v1/operators/sign-in", {}, json=body)

    async def oidc_nonce(self) -> str:
        """A nonce from auth for one single sign-on request: the ID token that answers it
        signs in only with this nonce, once."""
        return (await self._request("POST", "/api/v1/operators/sign-in/oidc-nonce", {}))["nonce"]

    async def _request(self, method: str, path: str, headers: dict, **kw: Any) -> Any:
        browser = BROWSER.get()
        if browser and self.proxy_secret:  # without the secret the gateway would not believe it
            headers = {**headers, "X-Forwarded-For": browser, PROXY_HEADER: self.proxy_secret}
        try:
            resp = await self.client.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the admin API cannot be reached: {exc}") from None
        if resp.status_code == 204:
            return None
        try:
            body = resp.json()
        except ValueError:
            raise Unavailable(f"the admin API answered HTTP {resp.status_code} without JSON") from None
        if resp.status_code >= 500:
            raise Unavailable(body.get("detail", f"HTTP {resp.status_code}"))
        if resp.status_code >= 400:
            raise Refused(resp.status_code, body)
        return body
