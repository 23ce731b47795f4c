"""Building the gateway from settings: the proxy (an ASGI app) and the edge it is served
behind (uvicorn's protocol with TLS, deadlines and a per-address cap on stalled connections)."""

from fleetline.settings import Settings
from gateway.edge import Stalls, check_listener, edge_protocol, server_tls
from gateway.proxy import Gateway


def create_app(settings: Settings) -> Gateway:
    return Gateway(settings, Stalls(settings.max_stalled_per_address,
                                    frozenset(settings.gateway_trusted_proxies)))


def edge_options(settings: Settings, app: Gateway, host: str) -> dict:
    """uvicorn's options for the gateway: refuses plain HTTP on a non-loopback address
    unless FLEETLINE_ALLOW_PLAINTEXT says a TLS proxy stands in front."""
    tls = server_tls(settings)
    check_listener(settings, host, tls)
    return {"http": edge_protocol(settings, tls, app.edge)}
