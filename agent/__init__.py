"""The Fleetline agent. Depends on httpx and the standard library only."""

__version__ = "1.0.0"
