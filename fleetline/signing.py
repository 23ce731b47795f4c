"""Signed commands and keysets: the canonical encoding (RFC 8785, JCS) and the Ed25519
signatures over it. Shared by dispatch (signs), `fleetline keys` (creates keys, signs
keysets offline) and tests; the agent carries its own verifier (agent/trust.py), which
must agree byte for byte.

The signed part holds no floats: params of commands are refused when they contain a
non-integral number or an integer beyond 2^53 (JSON's interoperable range), and object
keys must be ASCII. Within that domain JCS is exactly `json.dumps` with sorted keys, no
whitespace and UTF-8 text, which the property tests check against a direct reading of
the RFC.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any, List

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

COMMAND_CONTEXT = b"fleetline.cmd.v1\x00"
KEYSET_CONTEXT = b"fleetline.keyset.v1\x00"
AUDIENCE = "fleetline-agent"
MAX_SAFE_INTEGER = 2**53 - 1


class NotCanonical(ValueError):
    """A value outside the signed domain (a float, a huge integer, a non-ASCII key)."""


def check_signable(value: Any, path: str = "") -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise NotCanonical(f"{path or 'value'}: integers beyond 2^53 cannot be signed")
        return
    if isinstance(value, float):
        raise NotCanonical(f"{path or 'value'}: numbers must be integers (encode others as strings)")
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_signable(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise NotCanonical(f"{path or 'value'}: object keys must be ASCII")
            check_signable(item, f"{path}.{key}" if path else key)
        return
    raise NotCanonical(f"{path or 'value'}: {type(value).__name__} is not JSON")


def canonical(value: Any) -> bytes:
    """RFC 8785 bytes of a value in the signed domain."""
    check_signable(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      allow_nan=False).encode("utf-8")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A key's id: the first 16 bytes of the SHA-256 of its raw public bytes, base64url."""
    return b64url(hashlib.sha256(public_raw(key)).digest()[:16])


def root_key_sha256(public_b64url: str) -> str:
    """The fingerprint an agent checks a root key against (--root-key-sha256): the hex
    SHA-256 of the raw 32-byte public key. agent/trust.py computes the same."""
    return hashlib.sha256(b64url_decode(public_b64url.strip())).hexdigest()


def load_private(path: str) -> Ed25519PrivateKey:
    with open(path, "rb") as fh:
        key = serialization.load_pem_private_key(fh.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public(text: str) -> Ed25519PublicKey:
    """A raw public key in base64url (how agents pin the root key)."""
    return Ed25519PublicKey.from_public_bytes(b64url_decode(text.strip()))


def sign(key: Ed25519PrivateKey, context: bytes, payload: dict) -> dict:
    """{"payload": base64url(canonical), "sig": base64url(Ed25519(context + payload))}."""
    raw = canonical(payload)
    return {"payload": b64url(raw), "sig": b64url(key.sign(context + raw))}


def verify(key: Ed25519PublicKey, context: bytes, document: dict) -> dict:
    """The payload of a signed document, or ValueError. The signature covers the exact
    payload bytes; nothing else of the document is trusted."""
    from cryptography.exceptions import InvalidSignature

    try:
        raw = b64url_decode(document["payload"])
        key.verify(b64url_decode(document["sig"]), context + raw)
    except (KeyError, TypeError, ValueError, InvalidSignature) as exc:
        raise ValueError("the signature does not verify") from exc
    payload = json.loads(raw)
    if not isinstance(payload, dict):
        raise ValueError("the signed payload is not an object")
    return payload


def sign_keyset(root: Ed25519PrivateKey, keys: List[Ed25519PublicKey], version: int, days: float) -> dict:
    """A keyset document: the online keys agents may trust for `days`, signed by the root."""
    expires = (datetime.now(timezone.utc) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload = {"v": 1, "version": version, "expires_at": expires,
               "keys": [{"kid": key_id(k), "public_key": b64url(public_raw(k)), "not_after": expires}
                        for k in keys]}
    return {**sign(root, KEYSET_CONTEXT, payload), "root_kid": key_id(root.public_key())}
