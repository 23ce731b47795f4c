"""256-bit random secrets, shown once, stored only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets

# Prefixes make a leaked secret recognisable to scanners and to the operator.
REGISTRATION_PREFIX = "flreg_"
REFRESH_PREFIX = "flref_"


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
