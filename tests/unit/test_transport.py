"""Where the agent, the CLI and the console may send a credential."""

import pytest

from fleetline.transport import InsecureTransport, check_url, is_loopback_host, is_loopback_url


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("10.0.0.1", False), ("192.0.2.2", False), ("fleet.example.com", False),
    ("localhost.evil.com", False), ("127.0.0.1.nip.io", False), ("0.0.0.0", False),
])
def test_loopback_is_an_address_literal_or_localhost(host, loopback):
    assert is_loopback_host(host) is loopback


def test_plain_http_only_to_loopback_unless_allowed():
    for url in ("https://fleet.example.com", "https://10.0.0.1:8443/x", "http://127.0.0.1:8080",
                "http://localhost:8080", "http://[::1]:8080"):
        assert check_url(url) == url
    for url in ("http://fleet.example.com", "http://10.0.0.1:8080", "http://127.0.0.1.nip.io"):
        with pytest.raises(InsecureTransport, match="plain HTTP"):
            check_url(url)
        assert check_url(url, allow_plaintext=True) == url
    for url in ("ftp://x", "fleet.example.com", "https://", "file:///etc/passwd"):
        with pytest.raises(InsecureTransport, match="not an http"):
            check_url(url, allow_plaintext=True)
    assert is_loopback_url("http://127.0.0.1:1/") and not is_loopback_url("https://fleet.example.com")
