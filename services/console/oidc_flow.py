"""Sign-in through the organisation's OpenID Connect provider: the authorization code flow
with PKCE (S256), a state and a nonce, built with authlib's primitives.

1. GET /console/sign-in/oidc: a fresh state and code verifier, and a nonce auth issues
   (and keeps, to be taken once by the sign-in it answers), go into a short-lived cookie (HttpOnly, SameSite=Lax: it must come back on the provider's redirect, a
   top-level navigation from another site; Path=/console/sign-in), and the browser is sent
   to the provider's authorization endpoint.
2. GET /console/sign-in/oidc/callback?code&state: the state must be the cookie's (else
   nothing happens: another site cannot finish a sign-in it started); the cookie is spent
   at once; the code and the verifier buy an ID token from the provider's token endpoint
   (the client secret goes there only, over HTTPS); auth verifies the ID token (signature,
   issuer, audience, expiry, the nonce, a verified email of an enabled operator) and opens
   the session. The console vouches for nobody."""

from __future__ import annotations

import base64
import json
import secrets

import httpx
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from fleetline.ethos import Log
from fleetline.transport import tls_context
from services.console.api import Refused, Unavailable
from services.console.security import cookie_attributes
from services.console.signin import open_session, secure, session_response, sign_in_form

FLOW_COOKIE = "fleetline_oidc"
FLOW_PATH = "/console/sign-in"
FLOW_S = 600
CALLBACK = "/console/sign-in/oidc/callback"
_log = Log("console", "oidc")


class ProviderError(Exception):
    pass


class OidcClient:
    def __init__(self, issuer: str, client_id: str, client_secret: str | None, public_url: str,
                 ca_file: str | None = None):
        self.issuer, self.client_id, self.client_secret = issuer.rstrip("/"), client_id, client_secret
        self.redirect_uri = public_url.rstrip("/") + CALLBACK
        self.http = httpx.AsyncClient(timeout=10, follow_redirects=False, verify=tls_context(ca_file))
        self._metadata: dict | None = None

    async def close(self) -> None:
        await self.http.aclose()

    async def metadata(self) -> dict:
        if self._metadata is None:
            try:
                resp = await self.http.get(f"{self.issuer}/.well-known/openid-configuration")
                resp.raise_for_status()
                found = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise ProviderError(f"the provider's discovery document could not be read: {exc}") from None
            if found.get("issuer", "").rstrip("/") != self.issuer:
                raise ProviderError("the provider's discovery document names another issuer")
            self._metadata = found
        return self._metadata

    async def authorization_url(self, state: str, nonce: str, verifier: str) -> str:
        endpoint = (await self.metadata())["authorization_endpoint"]
        return add_params_to_uri(endpoint, [
            ("response_type", "code"), ("client_id", self.client_id), ("redirect_uri", self.redirect_uri),
            ("scope", "openid email"), ("state", state), ("nonce", nonce),
            ("code_challenge", create_s256_code_challenge(verifier)), ("code_challenge_method", "S256"),
        ])

    async def id_token(self, code: str, verifier: str) -> str:
        """The ID token the code and verifier buy (client_secret_basic when there is a secret)."""
        endpoint = (await self.metadata())["token_endpoint"]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
                "code_verifier": verifier}
        auth = (self.client_id, self.client_secret) if self.client_secret else None
        if auth is None:
            form["client_id"] = self.client_id
        try:
            resp = await self.http.post(endpoint, data=form, auth=auth)
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError(f"the provider's token endpoint failed: {exc}") from None
        if resp.status_code != 200 or not isinstance(body.get("id_token"), str):
            raise ProviderError(f"the provider refused the code ({body.get('error', resp.status_code)})")
        return body["id_token"]


def _pack(flow: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(flow).encode()).decode()


def _unpack(value: str | None) -> dict | None:
    try:
        flow = json.loads(base64.urlsafe_b64decode((value or "").encode()))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(flow, dict) or not all(isinstance(flow.get(k), str) for k in ("state", "nonce", "verifier")):
        return None
    return flow


async def start(request: Request) -> Response:
    client: OidcClient | None = request.app.state.console.oidc
    if client is None:
        return await sign_in_form(request, "Single sign-on is not configured.", 404)
    try:
        nonce = await request.app.state.console.api.oidc_nonce()
    except (Refused, Unavailable) as exc:
        _log.warning("nonce_refused", error=exc)
        return await sign_in_form(request, "Single sign-on cannot start now; please try again.", 503)
    flow = {"state": secrets.token_urlsafe(32), "nonce": nonce, "verifier": secrets.token_urlsafe(48)}
    try:
        url = await client.authorization_url(flow["state"], flow["nonce"], flow["verifier"])
    except ProviderError as exc:
        _log.warning("provider_unavailable", error=exc)
        return await sign_in_form(request, "The sign-on provider cannot be reached.", 502)
    response = RedirectResponse(url, status_code=303)  # the one redirect that leaves: to the provider
    response.set_cookie(FLOW_COOKIE, _pack(flow), **{**cookie_attributes(secure(request), FLOW_S),
                                                      "samesite": "lax", "path": FLOW_PATH})
    return response


async def callback(request: Request) -> Response:
    client: OidcClient | None = request.app.state.console.oidc
    if client is None:
        return await sign_in_form(request, "Single sign-on is not configured.", 404)
    flow = _unpack(request.cookies.get(FLOW_COOKIE))
    state, code = request.query_params.get("state", ""), request.query_params.get("code", "")
    refused = None
    if flow is None or not secrets.compare_digest(state.encode(), flow["state"].encode()):
        refused = "This sign-in was not started here, or it expired; please start again."
    elif request.query_params.get("error") or not code:
        refused = "The sign-on provider did not sign you in."
    if refused is None:
        try:
            id_token = await client.id_token(code, flow["verifier"])
        except ProviderError as exc:
            _log.warning("code_refused", error=exc)
            refused = "The sign-on provider refused this sign-in; please start again."
    if refused is None:
        opened = await open_session(request, {"method": "oidc", "id_token": id_token, "nonce": flow["nonce"]})
        if isinstance(opened, str):
            refused = opened
    if refused is not None:
        response = await sign_in_form(request, refused, 401)
    else:
        response = session_response(request, opened)
    # Spent, whatever happened: a code or a state is good for one try.
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH, httponly=True, samesite="lax")
    return response
