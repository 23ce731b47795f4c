"""Where a webhook may be sent: https to a public address. The URL's host is resolved here
and every address it resolves to is checked; the request then connects to the address that
was checked (the host kept for Host and TLS), so a name that resolves differently the
second time (DNS rebinding) reaches nothing it was not vetted for. FLEETLINE_WEBHOOK_ALLOW_PRIVATE
lifts both rules, for a lab."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class NotAllowed(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    url: str          # the URL with the vetted address in place of the host
    host: str         # for the Host header and TLS (SNI and the certificate's name)
    host_header: str


def check_url(url: str, allow_private: bool) -> None:
    """The URL's form (before anything is resolved): NotAllowed says why not."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise NotAllowed("the URL cannot be parsed") from None
    if parts.scheme != "https" and not (allow_private and parts.scheme == "http"):
        raise NotAllowed("the URL must be https")
    if not parts.hostname:
        raise NotAllowed("the URL has no host")
    if parts.username or parts.password:
        raise NotAllowed("the URL must not carry credentials")
    if port == 0:
        raise NotAllowed("the URL's port must not be 0")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    if not allow_private and not _public(literal):
        raise NotAllowed(f"{literal} is not a public address")


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_reserved or address.is_unspecified)


async def resolve(url: str, allow_private: bool) -> Target:
    """The address to connect to, every one the host resolves to being allowed."""
    check_url(url, allow_private)
    parts = urlsplit(url)
    host = parts.hostname
    assert host is not None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise NotAllowed(f"{host} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in found]
    if not addresses:
        raise NotAllowed(f"{host} does not resolve")
    barred = [str(a) for a in addresses if not _public(a)]
    if barred and not allow_private:
        raise NotAllowed(f"{host} resolves to {barred[0]}, not a public address")
    chosen = addresses[0]
    literal = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    return Target(url=parts._replace(netloc=netloc).geturl(), host=host, host_header=parts.netloc)
