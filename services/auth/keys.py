"""The signing key (auth only) and the access tokens it signs."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.tokens import machine_hash, public_jwk


def generate_private_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(path: Path) -> None:
    """Create the key file with mode 0600 from the start (never world-readable)."""
    with open(path, "wb", opener=lambda p, flags: os.open(p, flags, 0o600)) as fh:
        fh.write(generate_private_key_pem())


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
