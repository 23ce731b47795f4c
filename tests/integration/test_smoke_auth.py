from tests.integration.conftest import create_registration_token, register


def test_register_and_renew_roundtrip(auth):
    tok = create_registration_token(auth.url)
    resp = register(auth.url, tok["token"], "m-1")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["poll_interval_s"] == 300
