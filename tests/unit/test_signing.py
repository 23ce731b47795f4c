"""The canonical encoding (RFC 8785 within the signed domain) and signatures over it."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from fleetline.signing import (
    COMMAND_CONTEXT,
    KEYSET_CONTEXT,
    MAX_SAFE_INTEGER,
    NotCanonical,
    b64url,
    b64url_decode,
    canonical,
    sign,
    verify,
)

ascii_keys = st.text(alphabet=st.characters(max_codepoint=127), max_size=8)
signable = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ascii_keys, children, max_size=4),
    max_leaves=20)


@given(signable)
def test_any_allowed_json_re_encodes_to_the_same_bytes(value):
    encoded = canonical(value)
    assert canonical(json.loads(encoded)) == encoded


@given(st.dictionaries(ascii_keys, st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER), min_size=2, max_size=6))
def test_keys_are_sorted_and_there_is_no_whitespace(obj):
    text = canonical(obj).decode()
    assert text == "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{v}" for k, v in sorted(obj.items())) + "}"


def test_strings_escape_only_what_rfc_8785_escapes():
    text = "\u00e9\u20ac\U0001f600\u2028\x7f"  # beyond ASCII, beyond the BMP, separators, DEL
    assert canonical(text) == f'"{text}"'.encode()
    assert canonical("\x00\x1f\"\\\n\t\b\f\r") == b'"\\u0000\\u001f\\"\\\\\\n\\t\\b\\f\\r"'


@pytest.mark.parametrize("value", [1.5, 1e3, {"a": 0.1}, 2**53, -(2**53), {"é": 1}, [float("nan")]])
def test_outside_the_signed_domain_is_refused(value):
    with pytest.raises(NotCanonical):
        canonical(value)


def test_a_signature_covers_the_exact_payload_bytes_and_its_context():
    key = Ed25519PrivateKey.generate()
    document = sign(key, COMMAND_CONTEXT, {"type": "ping", "params": {}})
    assert verify(key.public_key(), COMMAND_CONTEXT, document) == {"type": "ping", "params": {}}
    with pytest.raises(ValueError):  # the same bytes under another context (a keyset)
        verify(key.public_key(), KEYSET_CONTEXT, document)
    tampered = dict(document, payload=b64url(b64url_decode(document["payload"]).replace(b"ping", b"pong")))
    with pytest.raises(ValueError):
        verify(key.public_key(), COMMAND_CONTEXT, tampered)
    with pytest.raises(ValueError):
        verify(Ed25519PrivateKey.generate().public_key(), COMMAND_CONTEXT, document)
