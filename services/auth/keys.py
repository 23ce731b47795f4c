"""The signing key (auth only) and the access tokens it signs."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.tokens import machine_hash, public_jwk


class Signer:
    def __init__(self, private_key_pem: bytes, issuer: str, audience: str, ttl_s: int):
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the signing key must be an Ed25519 private key")
        self._key = key
        self.jwk = public_jwk(key.public_key())
        self.kid = self.jwk["kid"]
        self.issuer, self.audience, self.ttl_s = issuer, audience, ttl_s

    @classmethod
    def from_file(cls, path: str, issuer: str, audience: str, ttl_s: int) -> "Signer":
        with open(path, "rb") as fh:
            return cls(fh.read(), issuer, audience, ttl_s)

    def jwks(self) -> dict:
        return {"keys": [self.jwk]}

    def access_token(self, agent_id: str, machine_id: str) -> tuple[str, datetime]:
        now = int(time.time())
        exp = now + self.ttl_s
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": agent_id,
            "iat": now,
            "exp": exp,
            "jti": uuid.uuid4().hex,
            "mch": machine_hash(machine_id),
        }
        token = jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.kid})
        return token, datetime.fromtimestamp(exp, tz=timezone.utc)
