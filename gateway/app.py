"""Building the gateway from settings."""

from gateway.proxy import Gateway
from services.common.settings import Settings


def create_app(settings: Settings) -> Gateway:
    return Gateway(settings)
