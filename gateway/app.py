"""Building the gateway from settings."""

from gateway.proxy import Gateway
from fleetline.settings import Settings


def create_app(settings: Settings) -> Gateway:
    return Gateway(settings)
