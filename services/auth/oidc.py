"""ID tokens of the organisation's OpenID Connect provider, verified by auth before it opens
a console session: the signature against the provider's published keys (its discovery
document names them), the issuer, the audience (our client id), the expiry, the nonce the
console sent in its authorization request, and a verified email.

The email comes from the ID token when the provider puts it there; a conforming provider
that also issued an access token releases scope claims from its userinfo endpoint instead
(OpenID Connect Core 5.4; panva's oidc-provider does so by default), so then auth asks the
userinfo endpoint itself, with that access token (authlib's client), and takes its answer
only for the ID token's own `sub`. An `at_hash` in the ID token must match the access
token. The console runs the authorization code flow (with PKCE, state and nonce); it
cannot vouch for anyone by itself. PyJWT verifies; nothing here is cryptography of our
own."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
from authlib.common.encoding import to_native
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core.util import create_half_hash

from fleetline.ethos import Log

_log = Log("auth", "oidc")
REFETCH_S = 10.0  # an unknown kid fetches the keys again, at most this often
ALGORITHMS = ("RS256", "ES256", "PS256", "EdDSA")


class NotVerified(Exception):
    """Why an ID token does not let anyone in."""


class OidcVerifier:
    def __init__(self, issuer: str, client_id: str, ca_file: str | None = None):
        self.issuer, self.client_id = issuer.rstrip("/"), client_id
        self._verify = ca_file or True
        self._discovery: dict | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _get(self, url: str) -> dict:
        async with httpx.AsyncClient(timeout=10, verify=self._verify) as client:
            resp = await client.get(url)
            resp.raise_for_status()
            return resp.json()

    async def _discovered(self) -> dict:
        if self._discovery is None:
            self._discovery = await self._get(f"{self.issuer}/.well-known/openid-configuration")
        return self._discovery

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at > REFETCH_S:
                try:
                    keys = jwt.PyJWKSet.from_dict(await self._get((await self._discovered())["jwks_uri"])).keys
                    self._keys = {k.key_id: k for k in keys if k.key_id is not None}
                    self._fetched_at = time.monotonic()
                except (httpx.HTTPError, ValueError, KeyError, jwt.PyJWTError) as exc:
                    _log.warning("oidc_keys_unavailable", issuer=self.issuer, error=exc)
                    raise NotVerified("the provider's keys could not be fetched") from None
        key = self._keys.get(kid) if kid is not None else None
        if key is None:
            raise NotVerified("the ID token is signed by a key the provider does not publish")
        return key

    async def verified_email(self, id_token: str, nonce: str, access_token: str | None = None) -> str:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise NotVerified("not a JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise NotVerified(f"the ID token's algorithm {header.get('alg')!r} is not accepted")
        key = await self._key(header.get("kid"))
        try:
            claims = jwt.decode(id_token, key, algorithms=list(ALGORITHMS), audience=self.client_id,
                                issuer=self.issuer, leeway=60,
                                options={"require": ["iss", "aud", "exp", "iat", "sub", "nonce"]})
        except jwt.PyJWTError as exc:
            raise NotVerified(f"the ID token does not verify: {exc}") from None
        if claims.get("nonce") != nonce:
            raise NotVerified("the ID token answers another sign-in (nonce)")
        if access_token is not None and "at_hash" in claims and \
                claims["at_hash"] != to_native(create_half_hash(access_token, header["alg"]) or b""):
            raise NotVerified("the access token is not the one the ID token was issued with (at_hash)")
        if "email" not in claims or "email_verified" not in claims:
            claims = await self._userinfo(claims["sub"], access_token)
        email = claims.get("email")
        if not isinstance(email, str) or claims.get("email_verified") is not True:
            raise NotVerified("the provider vouches for no verified email")
        return email.lower()

    async def _userinfo(self, sub: str, access_token: str | None) -> dict:
        """The provider's claims about `sub`, asked of its userinfo endpoint with the access
        token the same code bought (OpenID Connect Core 5.3): its answer counts only when
        it is about the same subject (5.3.2)."""
        if not access_token:
            raise NotVerified("the ID token holds no verified email and no access token came to ask for it")
        try:
            endpoint = (await self._discovered()).get("userinfo_endpoint")
            if not endpoint:
                raise NotVerified("the ID token holds no verified email and the provider has no userinfo endpoint")
            async with AsyncOAuth2Client(token={"access_token": access_token, "token_type": "Bearer"},
                                         timeout=10, verify=self._verify, follow_redirects=False) as client:
                resp = await client.get(endpoint)
            resp.raise_for_status()
            info = resp.json()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            _log.warning("oidc_userinfo_failed", issuer=self.issuer, error=exc)
            raise NotVerified("the provider's userinfo endpoint did not answer") from None
        if not isinstance(info, dict) or info.get("sub") != sub:
            raise NotVerified("the userinfo answer is about another subject (sub)")
        return info
