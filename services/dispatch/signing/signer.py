"""Signing commands at the moment they are queued, and the keysets agents trust.

Dispatch holds the online signing key (a file, never the database) and the root's public
key; never the root's private key. A keyset is installed only when the root key's
signature verifies and its version is above every one before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from fleetline.signing import (
    AUDIENCE,
    COMMAND_CONTEXT,
    KEYSET_CONTEXT,
    key_id,
    load_private,
    load_public,
    sign,
    verify,
)
from services.common.validation import rfc3339


class CommandSigner:
    def __init__(self, key_file: str):
        self._key = load_private(key_file)
        self.kid = key_id(self._key.public_key())

    def sign(self, *, command_id: str, agent_id: str, type: str, params: dict, issued_at: datetime,
             expires_at: datetime, run_timeout_s: int, issued_by: str | None = None,
             approved_by: list[str] | None = None) -> dict:
        """The `signed` object of a delivered command: what the agent verifies and runs, and
        who issued (and approved) it, which the agent logs with the command."""
        payload = {"v": 1, "aud": AUDIENCE, "command_id": command_id, "agent_id": agent_id,
                   "type": type, "params": params, "issued_at": rfc3339(issued_at),
                   "expires_at": rfc3339(expires_at), "run_timeout_s": run_timeout_s}
        if issued_by is not None:
            payload["issued_by"] = issued_by
        if approved_by:
            payload["approved_by"] = list(approved_by)
        return {"kid": self.kid, **sign(self._key, COMMAND_CONTEXT, payload)}

    def sign_cancel(self, *, command_id: str, agent_id: str, issued_by: str, iat: datetime) -> dict:
        """The `signed` object of a cancel (docs/api.md): signed like a command, and told
        apart from one by its shape (`cancel`, no `command_id`), so neither passes for the
        other."""
        payload = {"v": 1, "aud": AUDIENCE, "cancel": command_id, "agent_id": agent_id,
                   "issued_by": issued_by, "iat": rfc3339(iat)}
        return {"kid": self.kid, **sign(self._key, COMMAND_CONTEXT, payload)}


@dataclass(frozen=True)
class Keyset:
    version: int
    expires_at: datetime
    kids: frozenset[str]
    document: dict


class BadKeyset(ValueError):
    """Not signed by our root, malformed, or already expired."""


def read_keyset(document: object, root_public_key: str) -> Keyset:
    """A keyset document checked against the root key: its signature, shape and expiry."""
    if not isinstance(document, dict) or set(document) < {"payload", "sig", "root_kid"}:
        raise BadKeyset("a keyset is an object with payload, sig and root_kid")
    root = load_public(root_public_key)
    if document["root_kid"] != key_id(root):
        raise BadKeyset("the keyset is signed by another root key")
    try:
        payload = verify(root, KEYSET_CONTEXT, document)
        version, keys = payload["version"], payload["keys"]
        expires_at = datetime.fromisoformat(str(payload["expires_at"]).replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError) as exc:
        raise BadKeyset(f"the keyset does not verify with the root key: {exc}") from None
    if payload.get("v") != 1 or not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BadKeyset("the keyset's version must be a positive integer")
    if not isinstance(keys, list) or not all(isinstance(k, dict) and isinstance(k.get("kid"), str) for k in keys):
        raise BadKeyset("the keyset's keys must be a list of keys with a kid")
    if expires_at.tzinfo is None or expires_at <= datetime.now(timezone.utc):
        raise BadKeyset("the keyset has expired")
    doc = {"payload": document["payload"], "sig": document["sig"], "root_kid": document["root_kid"]}
    return Keyset(version, expires_at, frozenset(k["kid"] for k in keys), doc)
