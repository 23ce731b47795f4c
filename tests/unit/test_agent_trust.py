"""The agent's trust decisions: keysets its pinned root signed, rising; commands signed
for it by a key of that keyset; and only what the signature covers."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import trust
from fleetline.signing import (
    COMMAND_CONTEXT,
    b64url,
    b64url_decode,
    key_id,
    public_raw,
    sign,
    sign_keyset,
)

NOW = datetime.now(timezone.utc)
ROOT, ONLINE, OTHER = (Ed25519PrivateKey.generate() for _ in range(3))
AGENT = "9b0e2a6e-1c1f-4b7e-9e0a-3c7d2f1b5a10"


def held(*keys, version=1, days=30, root=ROOT) -> trust.Keyset:
    return trust.read_keyset(ROOT.public_key(), sign_keyset(root, [k.public_key() for k in keys], version, days))


def command(key=ONLINE, **overrides) -> dict:
    payload = {"v": 1, "aud": "fleetline-agent", "command_id": "c-1", "agent_id": AGENT, "type": "shell",
               "params": {"argv": ["true"]}, "issued_at": NOW.isoformat(),
               "expires_at": (NOW + timedelta(hours=1)).isoformat(), "run_timeout_s": 60}
    payload.update(overrides)
    signed = {"kid": key_id(key.public_key()), **sign(key, COMMAND_CONTEXT, payload)}
    return {"id": "c-1", "type": "shell", "params": {"argv": ["true"]}, "signed": signed}


def test_a_command_signed_for_this_agent_yields_what_the_signature_covers():
    delivered = command()
    delivered["params"] = {"argv": ["rm", "-rf", "/"]}  # a tampered unsigned copy
    payload = trust.verify_command(held(ONLINE), delivered, AGENT)
    assert payload["params"] == {"argv": ["true"]} and payload["run_timeout_s"] == 60


def _tampered_payload() -> dict:
    delivered = command()
    raw = b64url_decode(delivered["signed"]["payload"]).replace(b'"true"', b'"reboot"')
    delivered["signed"]["payload"] = b64url(raw)
    return delivered


@pytest.mark.parametrize("delivered,reason", [
    (_tampered_payload(), "does not verify"),
    (command(agent_id="someone-else"), "another agent"),
    (command(command_id="c-2"), "another command"),
    (command(expires_at=(NOW - timedelta(seconds=1)).isoformat()), "expired"),
    (command(aud="somebody"), "not meant"),
    ({"id": "c-1", "type": "ping", "params": {}}, "not signed"),
    ({**command(), "signed": {**command()["signed"], "sig": command(key=OTHER)["signed"]["sig"]}}, "does not verify"),
])
def test_anything_else_is_refused_with_its_reason(delivered, reason):
    with pytest.raises(trust.Untrusted, match=reason):
        trust.verify_command(held(ONLINE), delivered, AGENT)


def test_a_key_the_keyset_does_not_list_is_unknown_so_the_keyset_is_fetched():
    with pytest.raises(trust.UnknownKey):
        trust.verify_command(held(ONLINE), command(key=OTHER), AGENT)
    assert trust.verify_command(held(ONLINE, OTHER, version=2), command(key=OTHER), AGENT)


def test_keysets_from_another_root_or_not_above_the_held_version_or_expired_are_refused():
    with pytest.raises(trust.Untrusted, match="does not verify"):
        held(ONLINE, root=OTHER)
    document = sign_keyset(ROOT, [ONLINE.public_key()], 3, 30)
    assert trust.read_keyset(ROOT.public_key(), document, held_version=2).version == 3
    for version in (3, 4):
        with pytest.raises(trust.Untrusted, match="not above"):
            trust.read_keyset(ROOT.public_key(), document, held_version=version)
    with pytest.raises(trust.Untrusted, match="expired"):
        held(ONLINE, days=-1)


def test_a_retired_key_signs_nothing_any_more():
    payload = json.loads(b64url_decode(sign_keyset(ROOT, [ONLINE.public_key()], 1, 30)["payload"]))
    assert payload["keys"][0]["public_key"] == b64url(public_raw(ONLINE.public_key()))
    ks = held(ONLINE)
    ks.keys[key_id(ONLINE.public_key())] = (ONLINE.public_key(), NOW - timedelta(seconds=1))
    with pytest.raises(trust.Untrusted, match="retired"):
        trust.verify_command(ks, command(), AGENT)


def test_a_root_key_is_pinned_at_registration_only_when_vouched_for():
    from agent.trust import Untrusted, fingerprint, first_use_pin

    key, other = b64url(public_raw(ROOT.public_key())), b64url(public_raw(OTHER.public_key()))
    good = fingerprint(key)
    assert len(good) == 64 and good == good.lower()
    # The fingerprint decides, whatever the transport.
    assert first_use_pin(key, good, verified_tls=False, loopback=False) == "fingerprint"
    assert first_use_pin(key, good.upper(), verified_tls=False, loopback=False) == "fingerprint"
    for transport in ({"verified_tls": True, "loopback": True}, {"verified_tls": False, "loopback": False}):
        with pytest.raises(Untrusted, match="does not match"):
            first_use_pin(other, good, **transport)
    # Without one: verified TLS or loopback only.
    assert first_use_pin(key, None, verified_tls=True, loopback=False) == "verified_tls"
    assert first_use_pin(key, None, verified_tls=False, loopback=True) == "loopback"
    with pytest.raises(Untrusted, match="plain HTTP"):
        first_use_pin(key, None, verified_tls=False, loopback=False)
    for offered in (None, "", 5, "not-a-key"):
        with pytest.raises(Untrusted):
            first_use_pin(offered, None, verified_tls=True, loopback=True)


def cancel(key=ONLINE, command_id="c-1", **overrides) -> dict:
    payload = {"v": 1, "aud": "fleetline-agent", "cancel": "c-1", "agent_id": AGENT,
               "issued_by": "alice", "iat": NOW.isoformat()}
    payload.update(overrides)
    return {"command_id": command_id,
            "signed": {"kid": key_id(key.public_key()), **sign(key, COMMAND_CONTEXT, payload)}}


def test_a_cancel_signed_for_this_agent_names_the_command_it_stops():
    assert trust.verify_cancel(held(ONLINE), cancel(), AGENT) == "c-1"


@pytest.mark.parametrize("delivered,reason", [
    (cancel(agent_id="someone-else"), "another agent"),
    (cancel(command_id="c-2"), "another command"),  # replayed beside another command's id
    (cancel(key=OTHER), "not in keyset"),
    (cancel(aud="somebody"), "not meant"),
    ({"command_id": "c-1"}, "not signed"),
    ({"command_id": "c-1", "signed": command()["signed"]}, "not a cancel"),  # a command's signature
    (cancel(command_id="c-1", cancel=None), "not a cancel"),
])
def test_a_cancel_that_does_not_hold_stops_nothing(delivered, reason):
    with pytest.raises(trust.Untrusted, match=reason):
        trust.verify_cancel(held(ONLINE), delivered, AGENT)


def test_a_cancels_signature_never_passes_for_a_command():
    forged = {"id": "c-1", "type": "shell", "params": {}, "signed": cancel()["signed"]}
    with pytest.raises(trust.Untrusted):
        trust.verify_command(held(ONLINE), forged, AGENT)
