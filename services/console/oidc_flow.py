"""Sign-in through the organisation's OpenID Connect provider: the authorization code flow
with PKCE (S256), a state and a nonce, through authlib's OAuth 2.0 client.

1. GET /console/sign-in/oidc: a fresh state and code verifier, and a nonce auth issues
   (and keeps, to be taken once by the sign-in it answers), go into a short-lived cookie
   (HttpOnly, SameSite=Lax: it must come back on the provider's redirect, a top-level
   navigation from another site; Path=/console/sign-in), and the browser is sent to the
   provider's authorization endpoint.
2. GET /console/sign-in/oidc/callback?code&state[&iss]: the state must be the cookie's
   (else nothing happens: another site cannot finish a sign-in it started); when the
   provider announces RFC 9207, `iss` must be its issuer (a mix-up attack answers with
   another's); the cookie is spent at once; the code and the verifier buy an ID token and
   an access token from the provider's token endpoint, the client authenticated as the
   provider expects (`FLEETLINE_OIDC_TOKEN_AUTH_METHOD`: client_secret_basic, its id and
   secret form-urlencoded first as RFC 6749 2.3.1 says, or client_secret_post); auth
   verifies the ID token (signature, issuer, audience, expiry, the nonce it issued), reads
   a verified email from it or, when the provider releases the claim only there, from the
   userinfo endpoint with the access token (same `sub`), and opens the session for the
   enabled operator with that email. The console vouches for nobody."""

from __future__ import annotations

import base64
import json
import secrets
from urllib.parse import quote_plus

import httpx
from authlib.common.encoding import to_native
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
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
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
_log = Log("console", "oidc")


class ProviderError(Exception):
    pass


def client_secret_basic(client, method, uri, headers, body):
    """HTTP Basic client authentication as RFC 6749 2.3.1 says: the client id and the secret
    each form-urlencoded before they are joined and base64-encoded (a secret with `+`, `/`
    or `=` is refused otherwise by providers that follow it). authlib's own does not encode
    them (authlib PR #594, reverted); it takes this one in its place."""
    pair = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret or '')}"
    headers["Authorization"] = "Basic " + to_native(base64.b64encode(pair.encode("utf-8")))
    return uri, headers, body


class OidcClient:
    def __init__(self, issuer: str, client_id: str, client_secret: str | None, public_url: str,
                 ca_file: str | None = None, auth_method: str = "client_secret_basic"):
        self.issuer, self.client_id, self.client_secret = issuer.rstrip("/"), client_id, client_secret
        self.auth_method = auth_method if client_secret else "none"
        self.redirect_uri = public_url.rstrip("/") + CALLBACK
        self._tls = tls_context(ca_file)  # one context for every client made below
        self.http = httpx.AsyncClient(timeout=10, follow_redirects=False, verify=self._tls)
        self._metadata: dict | None = None

    async def close(self) -> None:
        await self.http.aclose()

    def _oauth(self) -> AsyncOAuth2Client:
        """authlib's client for one step of one sign-in (it keeps the token it fetched)."""
        client = AsyncOAuth2Client(client_id=self.client_id, client_secret=self.client_secret,
                                   token_endpoint_auth_method=self.auth_method, code_challenge_method="S256",
                                   redirect_uri=self.redirect_uri, scope="openid email", verify=self._tls,
                                   timeout=10, follow_redirects=False)
        client.register_client_auth_method(("client_secret_basic", client_secret_basic))
        return client

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
        async with self._oauth() as client:
            url, _ = client.create_authorization_url(endpoint, state=state, code_verifier=verifier, nonce=nonce)
        return url

    async def issuer_refused(self, params) -> str | None:
        """RFC 9207: when the provider says its authorization responses carry `iss`, a
        response without it, or with another issuer's, is refused (a mix-up attack)."""
        if not (await self.metadata()).get("authorization_response_iss_parameter_supported"):
            return None
        given = params.get("iss")
        if given is None:
            return "the provider's answer does not say who sent it (iss)"
        if given.rstrip("/") != self.issuer:
            return "the answer comes from another issuer than this console's provider (iss)"
        return None

    async def tokens(self, code: str, verifier: str) -> dict:
        """The ID token and the access token the code and verifier buy."""
        endpoint = (await self.metadata())["token_endpoint"]
        try:
            async with self._oauth() as client:
                token = await client.fetch_token(endpoint, grant_type="authorization_code", code=code,
                                                 code_verifier=verifier)
        except OAuthError as exc:
            raise ProviderError(f"the provider refused the code ({exc.error})") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError(f"the provider's token endpoint failed: {exc}") from None
        if not isinstance(token.get("id_token"), str):
            raise ProviderError("the provider's answer holds no ID token")
        return {"id_token": token["id_token"], "access_token": token.get("access_token")}


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
    params = request.query_params
    state, code = params.get("state", ""), params.get("code", "")
    refused = None
    if flow is None or not secrets.compare_digest(state.encode(), flow["state"].encode()):
        refused = "This sign-in was not started here, or it expired; please start again."
    if refused is None:
        try:
            wrong_issuer = await client.issuer_refused(params)
        except ProviderError as exc:
            wrong_issuer = str(exc)
        if wrong_issuer is not None:
            _log.warning("answer_refused", reason=wrong_issuer)
            refused = "The sign-on answer did not come from this console's provider; please start again."
    if refused is None and (params.get("error") or not code):
        refused = "The sign-on provider did not sign you in."
    if refused is None:
        assert flow is not None
        try:
            tokens = await client.tokens(code, flow["verifier"])
        except ProviderError as exc:
            _log.warning("code_refused", error=exc)
            refused = "The sign-on provider refused this sign-in; please start again."
    opened: dict | str = refused or ""
    if refused is None:
        assert flow is not None
        opened = await open_session(request, {"method": "oidc", "nonce": flow["nonce"], **tokens})
    if isinstance(opened, str):
        response = await sign_in_form(request, opened, 401)
    else:
        response = session_response(request, opened)
    # Spent, whatever happened: a code or a state is good for one try.
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH, httponly=True, samesite="lax")
    return response
