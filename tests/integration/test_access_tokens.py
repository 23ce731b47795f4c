"""Access tokens: EdDSA with kid, verified from the JWKS; every forgery is refused."""

import asyncio
import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.requests import Request

from fleetline.cli.keys import ACCESS_TOKEN_KEY
from services.common.errors import ApiError
from services.common.tokens import AccessTokenVerifier, KeySet, machine_hash
from tests.integration.conftest import create_registration_token, register
from tests.integration.support import HTTP


def _request(token: str, machine: str | None) -> Request:
    headers = [(b"authorization", f"Bearer {token}".encode())]
    if machine is not None:
        headers.append((b"x-machine-id", machine.encode()))
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers,
                    "query_string": b""})


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@pytest.fixture
def issued(auth):
    tok = create_registration_token(auth.url)
    reg = register(auth.url, tok["token"], "m-tok").json()
    keys = KeySet(jwks_url=f"{auth.url}/.well-known/jwks.json")
    return auth, reg, AccessTokenVerifier(keys, "fleetline-auth", "fleetline")


def _outcome(verifier, token, machine="m-tok"):
    try:
        ident = asyncio.run(verifier.authenticate_agent(_request(token, machine)))
        return ident.agent_id
    except ApiError as exc:
        return (exc.status, exc.code)


def test_jwks_and_token_shape(issued):
    auth, reg, verifier = issued
    jwks = HTTP.get(f"{auth.url}/.well-known/jwks.json").json()
    (key,) = jwks["keys"]
    assert (key["kty"], key["crv"]) == ("OKP", "Ed25519") and key["kid"]
    header = jwt.get_unverified_header(reg["access_token"])
    assert header["alg"] == "EdDSA" and header["kid"] == key["kid"]
    claims = jwt.decode(reg["access_token"], options={"verify_signature": False})
    assert set(claims) >= {"iss", "aud", "sub", "iat", "exp", "jti", "mch"}
    assert claims["sub"] == reg["agent_id"]
    assert claims["mch"] == machine_hash("m-tok") and "m-tok" not in json.dumps(claims)
    assert _outcome(verifier, reg["access_token"]) == reg["agent_id"]


def test_forged_and_foreign_tokens_are_refused(issued):
    auth, reg, verifier = issued
    good = jwt.decode(reg["access_token"], options={"verify_signature": False})
    kid = jwt.get_unverified_header(reg["access_token"])["kid"]
    jwk = HTTP.get(f"{auth.url}/.well-known/jwks.json").json()["keys"][0]
    public_raw = base64.urlsafe_b64decode(jwk["x"] + "==")
    stranger = Ed25519PrivateKey.generate()

    alg_none = f"{_b64({'alg': 'none', 'kid': kid})}.{_b64(good)}."
    hs256 = jwt.api_jws.PyJWS().encode(json.dumps(good).encode(), public_raw, algorithm="HS256",
                                      headers={"kid": kid})
    unknown_kid = jwt.encode(good, stranger, algorithm="EdDSA", headers={"kid": "nope"})
    wrong_key = jwt.encode(good, stranger, algorithm="EdDSA", headers={"kid": kid})
    expired = {**good, "exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}
    wrong_aud = {**good, "aud": "someone-else"}
    cases = {
        "alg none": alg_none,
        "HS256 with the public key": hs256,
        "unknown kid": unknown_kid,
        "signature by another key": wrong_key,
        "garbage": "not.a.jwt",
        "expired": jwt.encode(expired, stranger, algorithm="EdDSA", headers={"kid": kid}),
        "wrong audience": jwt.encode(wrong_aud, stranger, algorithm="EdDSA", headers={"kid": kid}),
    }
    for name, token in cases.items():
        assert _outcome(verifier, token) == (401, "invalid_token"), name
    assert _outcome(verifier, reg["access_token"], "another-machine") == (403, "machine_mismatch")
    assert _outcome(verifier, reg["access_token"], None) == (403, "machine_mismatch")


def test_expired_and_wrong_audience_fail_even_with_the_real_key(tmp_path, key_dir):
    # Sign with the real signing key so only the claim under test is wrong.
    from services.auth.keys import Signer

    signer = Signer.from_file(str(key_dir / ACCESS_TOKEN_KEY), "fleetline-auth", "fleetline", 900)
    keys = KeySet()
    keys.keys[signer.kid] = serialization.load_pem_private_key(
        (key_dir / ACCESS_TOKEN_KEY).read_bytes(), None).public_key()
    verifier = AccessTokenVerifier(keys, "fleetline-auth", "fleetline")
    agent = "0b3f7c1e-5d7a-4c55-9a43-2f0d2b4a7e11"
    token, _ = signer.access_token(agent, "m-tok")
    assert _outcome(verifier, token) == agent
    not_a_uuid, _ = signer.access_token("a1", "m-tok")  # validly signed, but names no agent
    assert _outcome(verifier, not_a_uuid) == (401, "invalid_token")
    claims = jwt.decode(token, options={"verify_signature": False})
    key = serialization.load_pem_private_key((key_dir / ACCESS_TOKEN_KEY).read_bytes(), None)
    for bad in ({"exp": int(time.time()) - 120}, {"aud": "x"}, {"iss": "x"}):
        forged = jwt.encode({**claims, **bad}, key, algorithm="EdDSA", headers={"kid": signer.kid})
        assert _outcome(verifier, forged) == (401, "invalid_token"), bad
    within_leeway = jwt.encode({**claims, "exp": int(time.time()) - 30}, key, algorithm="EdDSA",
                               headers={"kid": signer.kid})
    assert _outcome(verifier, within_leeway) == agent


def test_a_token_living_longer_than_the_server_issues_them_is_refused(key_dir):
    from services.auth.keys import Signer

    long_lived = Signer.from_file(str(key_dir / ACCESS_TOKEN_KEY), "fleetline-auth", "fleetline", 86400 * 365)
    keys = KeySet()
    keys.keys[long_lived.kid] = serialization.load_pem_private_key(
        (key_dir / ACCESS_TOKEN_KEY).read_bytes(), None).public_key()
    verifier = AccessTokenVerifier(keys, "fleetline-auth", "fleetline", max_lifetime_s=900)
    agent = "0b3f7c1e-5d7a-4c55-9a43-2f0d2b4a7e11"
    token, _ = long_lived.access_token(agent, "m-tok")
    assert _outcome(verifier, token) == (401, "invalid_token")
    usual, _ = Signer.from_file(str(key_dir / ACCESS_TOKEN_KEY), "fleetline-auth", "fleetline",
                                900).access_token(agent, "m-tok")
    assert _outcome(verifier, usual) == agent


class _JwksServer:
    """A JWKS document served from a file the test rewrites (auth after a key rotation)."""

    def __init__(self, folder):
        import functools
        import http.server
        import threading

        self.path = folder / "jwks.json"
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"


def test_a_key_auth_stops_publishing_stops_verifying_within_one_refresh(auth_started, start_dispatch, tmp_path,
                                                                         key_dir):
    from services.auth.keys import Signer
    from tests.integration.fleet import Fleet

    auth_started.wait_ready()
    jwks = _JwksServer(tmp_path)
    jwks.path.write_text(HTTP.get(f"{auth_started.url}/.well-known/jwks.json").text)
    dispatch = start_dispatch(FLEETLINE_JWKS_URL=jwks.url, FLEETLINE_JWKS_REFRESH_S="1")
    fleet = Fleet(auth_started.url, dispatch.url)
    agent = fleet.register()
    assert fleet.poll(agent)["commands"] == []  # verified, and cached
    # Auth rotates to a new key and publishes only it.
    (tmp_path / "new.pem").write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    rotated = Signer.from_file(str(tmp_path / "new.pem"), "fleetline-auth", "fleetline", 900)
    jwks.path.write_text(json.dumps(rotated.jwks()))

    def refused() -> bool:
        resp = HTTP.get(f"{dispatch.url}/api/v1/agents/{agent.agent_id}/commands", headers=agent.headers)
        return resp.status_code == 401 and resp.json()["error"] == "invalid_token"

    from tests.integration.support import wait_until

    started = time.monotonic()
    wait_until(refused, 10, 0.1, "the retired key's token to be refused")
    assert time.monotonic() - started < 4  # one refresh (1 s) and a little
    fresh, _ = rotated.access_token(agent.agent_id, agent.machine_id)
    resp = HTTP.get(f"{dispatch.url}/api/v1/agents/{agent.agent_id}/commands",
                    headers={**agent.headers, "Authorization": f"Bearer {fresh}"})
    assert resp.status_code == 200
    assert "jwks_keys_retired" in dispatch.log()
    jwks.server.shutdown()
