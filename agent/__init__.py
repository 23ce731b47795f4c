"""The Fleetline agent. Depends on httpx, cryptography and the standard library only (its own
distribution: agent/pyproject.toml)."""

__version__ = "1.0.0"
