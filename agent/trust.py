"""What the agent trusts: a pinned root key, the keyset it vouches for, and commands signed
by a key of that keyset for this agent. No setting turns this off.

- The root key is pinned from `--root-key-file`; else from the registration's answer, but
  never blindly (`first_use_pin`): only when it matches the fingerprint the agent was given
  (`--root-key-sha256`), or when the answer came over verified TLS or from a loopback
  address (logged as a warning). Kept in the state file.
- A keyset is accepted only when the pinned root signed it, its version is above the one
  held, and it has not expired.
- A command runs only when its `signed` payload verifies with a key of the keyset, names
  this agent and this command, and has not expired; then only what that payload says runs
  (type, params, run timeout), never the unsigned copy beside it.
- A cancel stops a command only when its `signed` payload verifies the same way and names
  this agent and that command (`cancel`); a command's payload never passes for a cancel,
  nor the reverse (each lacks what the other must name).

The agent verifies exact payload bytes; it never re-encodes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

COMMAND_CONTEXT = b"fleetline.cmd.v1\x00"
KEYSET_CONTEXT = b"fleetline.keyset.v1\x00"
AUDIENCE = "fleetline-agent"


class Untrusted(Exception):
    """Why a keyset or a command is refused."""


class UnknownKey(Untrusted):
    """The command names a key the keyset held does not list."""


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _instant(text: object) -> datetime:
    if not isinstance(text, str):
        raise Untrusted("a timestamp is missing")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Untrusted(f"{text!r} is not a timestamp") from None
    if moment.tzinfo is None:
        raise Untrusted(f"{text!r} has no time zone")
    return moment


def _verified(key: Ed25519PublicKey, context: bytes, document: object) -> dict:
    if not isinstance(document, dict):
        raise Untrusted("not a signed document")
    try:
        raw = _b64(document["payload"])
        key.verify(_b64(document["sig"]), context + raw)
        payload = json.loads(raw)
    except (KeyError, TypeError, ValueError, InvalidSignature):
        raise Untrusted("the signature does not verify") from None
    if not isinstance(payload, dict) or payload.get("v") != 1:
        raise Untrusted("the signed payload is not a version 1 object")
    return payload


def public_key(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(_b64(text.strip()))
    except ValueError:
        raise Untrusted("not an Ed25519 public key") from None


def fingerprint(text: str) -> str:
    """The lowercase hex SHA-256 of a raw Ed25519 public key given in base64url: what
    `--root-key-sha256` compares with (printed by `fleetline tokens create`)."""
    return hashlib.sha256(_b64(text.strip())).hexdigest()


def first_use_pin(offered: object, expected_sha256: str | None, verified_tls: bool,
                  loopback: bool) -> str:
    """Whether a root key offered in a registration answer may be pinned: returns how it was
    vouched for (`fingerprint`, `verified_tls`, `loopback`), or raises Untrusted. Pure."""
    if not isinstance(offered, str) or not offered.strip():
        raise Untrusted("the server offered no command-signing root key")
    public_key(offered)  # a well-formed key, or Untrusted
    if expected_sha256:
        if fingerprint(offered) != expected_sha256.strip().lower():
            raise Untrusted("the root key offered does not match --root-key-sha256: something between "
                            "this agent and the server may have replaced it")
        return "fingerprint"
    if verified_tls:
        return "verified_tls"
    if loopback:
        return "loopback"
    raise Untrusted("refusing to pin a root key received over plain HTTP from a non-loopback address: "
                    "give --root-key-sha256 (printed with the registration token) or --root-key-file")


@dataclass
class Keyset:
    version: int
    expires_at: datetime
    keys: dict[str, tuple[Ed25519PublicKey, datetime]]  # kid -> (key, not_after)
    document: object  # as the server sent it, kept to be checked again at the next start


def read_keyset(root: Ed25519PublicKey, document: object, held_version: int = 0,
                now: datetime | None = None) -> Keyset:
    """A keyset the root signed, above `held_version`, not expired; else Untrusted."""
    now = now or datetime.now(timezone.utc)
    payload = _verified(root, KEYSET_CONTEXT, document)
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise Untrusted("the keyset has no version")
    if version <= held_version:
        raise Untrusted(f"keyset version {version} is not above the one held ({held_version})")
    expires_at = _instant(payload.get("expires_at"))
    if expires_at <= now:
        raise Untrusted("the keyset has expired")
    keys = {}
    for entry in payload.get("keys") or []:
        try:
            keys[entry["kid"]] = (public_key(entry["public_key"]), _instant(entry["not_after"]))
        except (KeyError, TypeError):
            raise Untrusted("a keyset entry is malformed") from None
    return Keyset(version, expires_at, keys, document)


def _signed_for(keyset: Keyset | None, signed: object, agent_id: str, now: datetime, what: str) -> dict:
    """A payload signed by a live key of the keyset, for agents, naming this agent."""
    if not isinstance(signed, dict) or not isinstance(signed.get("kid"), str):
        raise Untrusted(f"the {what} is not signed")
    if keyset is None:
        raise UnknownKey("no keyset is held to verify it")
    if keyset.expires_at <= now:
        raise UnknownKey("the keyset held has expired")
    entry = keyset.keys.get(signed["kid"])
    if entry is None:
        raise UnknownKey(f"key {signed['kid']} is not in keyset version {keyset.version}")
    key, not_after = entry
    if not_after <= now:
        raise Untrusted(f"key {signed['kid']} is retired")
    payload = _verified(key, COMMAND_CONTEXT, signed)
    if payload.get("aud") != AUDIENCE:
        raise Untrusted(f"the {what} is not meant for an agent")
    if payload.get("agent_id") != agent_id:
        raise Untrusted(f"the {what} was signed for another agent")
    return payload


def verify_cancel(keyset: Keyset | None, cancel: dict, agent_id: str, now: datetime | None = None) -> str:
    """The id of the command a delivered cancel stops, if it is to be obeyed; else Untrusted."""
    payload = _signed_for(keyset, cancel.get("signed"), agent_id, now or datetime.now(timezone.utc), "cancel")
    if "command_id" in payload or not isinstance(payload.get("cancel"), str):
        raise Untrusted("the signed payload is not a cancel")
    if payload["cancel"] != cancel.get("command_id"):
        raise Untrusted("the signature belongs to a cancel of another command")
    return payload["cancel"]


def verify_command(keyset: Keyset | None, command: dict, agent_id: str, now: datetime | None = None) -> dict:
    """The signed payload of a delivered command, if it may run here; else Untrusted."""
    now = now or datetime.now(timezone.utc)
    payload = _signed_for(keyset, command.get("signed"), agent_id, now, "command")
    if "cancel" in payload:
        raise Untrusted("the signed payload is a cancel, not a command")
    if payload.get("command_id") != command.get("id"):
        raise Untrusted("the signature belongs to another command")
    if _instant(payload.get("expires_at")) <= now:
        raise Untrusted("the command has expired")
    if not isinstance(payload.get("type"), str) or not isinstance(payload.get("params"), dict):
        raise Untrusted("the signed payload has no type or params")
    timeout = payload.get("run_timeout_s")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise Untrusted("the signed payload has no run timeout")
    return payload
