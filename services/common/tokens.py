"""Access-token verification and machine binding, shared by every service that serves agents.

Access tokens are EdDSA JWTs signed by auth. Verifiers hold only public keys: from a PEM
file, or from auth's JWKS, fetched with the async client, cached, and refetched when a
token names a `kid` we have not seen (at most once per `refetch_interval_s`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import NamedTuple

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.requests import Request

from fleetline.ethos import Log
from services.common.errors import forbidden, invalid_token

LEEWAY_S = 60
_log = Log("common", "tokens")


def machine_hash(machine_id: str) -> str:
    """What the token binds: a SHA-256 of the machine id, never the id itself."""
    return hashlib.sha256(machine_id.encode("utf-8")).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The JWK of an Ed25519 key, its `kid` the RFC 7638 thumbprint."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = b64url(raw)
    thumb = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    kid = b64url(hashlib.sha256(thumb.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}


@dataclass(frozen=True)
class AgentIdentity:
    agent_id: str


class Verified(NamedTuple):
    """What a verified access token tells a request: its agent (a canonical UUID), the
    machine hash it is bound to (None when the claim is not a string), its expiry, and the
    key that signed it (a cached token stops verifying once that key is retired)."""
    agent_id: str
    machine_hash: str | None
    expires: float
    kid: str


RETRY_FAILED_FETCH_S = 0.5


class KeySet:
    """Public keys by `kid`."""

    def __init__(self, jwks_url: str | None = None, public_key_file: str | None = None,
                 refetch_interval_s: float = 10.0):
        self.jwks_url = jwks_url
        self.refetch_interval_s = refetch_interval_s
        self.keys: dict[str, Ed25519PublicKey] = {}
        self._configured: dict[str, Ed25519PublicKey] = {}  # from the file: never retired
        self._last_fetch = 0.0
        self._fetched = False  # did the last fetch succeed
        self._attempts = 0
        self._lock = asyncio.Lock()
        if public_key_file:
            with open(public_key_file, "rb") as fh:
                key = serialization.load_pem_public_key(fh.read())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"{public_key_file} is not an Ed25519 public key")
            self._configured[public_jwk(key)["kid"]] = key
        self.keys = dict(self._configured)

    def load_jwks(self, document: dict) -> None:
        """The published keys replace the ones held: a key auth no longer publishes (retired
        after a rotation or a leak) stops verifying with this refresh."""
        keys = {}
        for jwk in jwt.PyJWKSet.from_dict(document).keys:
            if jwk.key_type == "OKP" and isinstance(jwk.key, Ed25519PublicKey) and jwk.key_id:
                keys[jwk.key_id] = jwk.key
        retired = set(self.keys) - set(keys) - set(self._configured)
        self.keys = {**self._configured, **keys}
        if retired:
            _log.info("jwks_keys_retired", kids=",".join(sorted(retired)))

    async def refresh(self, force: bool = False) -> None:
        """Fetch the JWKS again: at most every refetch_interval_s after a success (unknown
        kids must not hammer auth), and soon again after a failure: dispatch started before
        auth, or auth restarting, must not turn valid tokens away. A caller arriving within
        RETRY_FAILED_FETCH_S of a failure waits for the retry instead of being refused, and
        callers that waited while another fetched use that fetch (one fetch per wave)."""
        if not self.jwks_url:
            return
        attempt = self._attempts
        async with self._lock:
            if self._attempts != attempt and not force:
                return  # fetched (or tried) while we waited for the lock
            since = time.monotonic() - self._last_fetch
            if self._fetched and not force and since < self.refetch_interval_s:
                return
            if not self._fetched and not force and since < RETRY_FAILED_FETCH_S:
                await asyncio.sleep(RETRY_FAILED_FETCH_S - since)
            self._last_fetch = time.monotonic()
            self._attempts += 1
            try:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    resp = await client.get(self.jwks_url)
                    resp.raise_for_status()
                    self.load_jwks(resp.json())
                self._fetched = True
                _log.info("jwks_loaded", url=self.jwks_url, keys=len(self.keys))
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                self._fetched = False
                _log.warning("jwks_fetch_failed", url=self.jwks_url, error=exc)

    async def get(self, kid: str) -> Ed25519PublicKey | None:
        key = self.keys.get(kid)
        if key is None:
            await self.refresh()
            key = self.keys.get(kid)
        return key


class AccessTokenVerifier:
    """Verifies access tokens; remembers the claims of tokens it has verified.

    An agent presents the same token for its whole lifetime (15 min by default), and
    verification (Ed25519 plus PyJWT's parsing) was a quarter of a poll's CPU. A cache hit
    needs the exact same token bytes; expiry, and that its signing key is still published,
    are checked again on every hit. A token whose lifetime (exp - iat) exceeds
    `max_lifetime_s` (the configured access-token lifetime) is refused: a leaked signing key
    or a bug cannot mint tokens that live for ever.
    """

    CACHE_SIZE = 65536

    def __init__(self, keys: KeySet, issuer: str, audience: str, max_lifetime_s: int = 900):
        self.keys, self.issuer, self.audience = keys, issuer, audience
        self.max_lifetime_s = max_lifetime_s
        # Keyed by the token's SHA-256, holding only what a request needs: with a poll held
        # by every agent, the token text and its full claims were 2 KiB per agent.
        self._verified: dict[bytes, Verified] = {}

    async def verify(self, token: str) -> Verified:
        key = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(key)
        if known is not None:
            if known.expires + LEEWAY_S > time.time() and known.kid in self.keys.keys:
                return known
            del self._verified[key]
        claims = await self._verify_signature(token)
        try:  # checked once per token: everything downstream relies on a canonical UUID
            agent_id = str(uuid.UUID(str(claims["sub"])))
        except ValueError:
            raise invalid_token("The access token names no valid agent.") from None
        bound = claims["mch"]
        verified = Verified(agent_id, bound if isinstance(bound, str) else None, float(claims["exp"]),
                            claims["__kid"])
        if len(self._verified) >= self.CACHE_SIZE:
            self._verified.clear()  # crude but bounded; a refill costs one verify per agent
        self._verified[key] = verified
        return verified

    async def _verify_signature(self, token: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid_token("The access token is malformed.") from None
        kid = header.get("kid")
        if header.get("alg") != "EdDSA" or not isinstance(kid, str):
            raise invalid_token("The access token is not an EdDSA token with a kid.")
        key = await self.keys.get(kid)
        if key is None:
            raise invalid_token("The access token was signed by an unknown key.")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "jti", "iss", "aud", "mch"]},
            )
        except jwt.ExpiredSignatureError:
            raise invalid_token("The access token has expired.") from None
        except jwt.PyJWTError:
            raise invalid_token("The access token is not valid.") from None
        lifetime = claims["exp"] - claims["iat"]
        if not isinstance(lifetime, (int, float)) or lifetime > self.max_lifetime_s + LEEWAY_S:
            raise invalid_token("The access token lives longer than this server issues them.")
        return {**claims, "__kid": kid}

    async def authenticate_agent(self, request: Request) -> AgentIdentity:
        """Bearer token + `X-Machine-ID` -> the agent, or the error docs/api.md names (401, 403)."""
        token = bearer_token(request)
        if not token:
            raise invalid_token("A bearer access token is required.")
        verified = await self.verify(token)
        machine_id = request.headers.get("x-machine-id")
        bound = verified.machine_hash
        if not machine_id or bound is None or not hmac.compare_digest(machine_hash(machine_id), bound):
            raise forbidden("machine_mismatch", "X-Machine-ID is not the machine this token was issued to.")
        return AgentIdentity(agent_id=verified.agent_id)


def bearer_token(request: Request) -> str:
    """The credential of `Authorization: Bearer <token>`; empty when there is none."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
