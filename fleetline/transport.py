"""How every client of the gateway (the agent, the CLI, the console) reaches it before it
sends a credential: over TLS it verifies the server's certificate (the CA file it is given,
else the system trust store), and it refuses plain HTTP to anything but a loopback
address unless told otherwise. Standard library only: the agent imports it too.
"""

from __future__ import annotations

import ipaddress
import ssl
from urllib.parse import urlsplit


class InsecureTransport(ValueError):
    """A URL this client must not send a credential to."""


def is_loopback_host(host: str) -> bool:
    """`localhost`, or an address literal in 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, allow_plaintext: bool = False) -> str:
    """`url` if this client may use it; else InsecureTransport saying why."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InsecureTransport(f"{url!r} is not an http:// or https:// URL with a host")
    if parts.scheme == "http" and not allow_plaintext and not is_loopback_host(parts.hostname):
        raise InsecureTransport(
            f"{url} is plain HTTP to a non-loopback address: credentials would cross the network "
            "readable. Use https:// (or allow plain HTTP explicitly when a trusted network stands "
            "in between)")
    return url


def is_loopback_url(url: str) -> bool:
    hostname = urlsplit(url).hostname
    return hostname is not None and is_loopback_host(hostname)


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Verifies the server's certificate and host name: against `ca_file` alone when one is
    given (a private CA), else against the system trust store."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
