"""What an operator gives an `agent.upgrade` command (docs/api.md): the version, and
`allow_downgrade` or `upgrade_timeout_s` if wanted. The digest and size are the server's
to add when it signs (lifecycle/issuing.py), never the operator's. Pure."""

from __future__ import annotations

from fleetline.release_names import VERSION

UPGRADE = "agent.upgrade"
GIVEN = {"version", "allow_downgrade", "upgrade_timeout_s"}


class BadUpgrade(ValueError):
    def __init__(self, reason: str, field: str):
        super().__init__(reason)
        self.field = field


def check_params(params: dict) -> None:
    """Raises BadUpgrade naming the field that is wrong."""
    for name in sorted(set(params) - GIVEN):
        why = "is filled in by the server when it signs" if name in ("sha256", "size") else "is not a parameter"
        raise BadUpgrade(f"{name} {why} of agent.upgrade (give version, allow_downgrade, upgrade_timeout_s)",
                         name)
    version = params.get("version")
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise BadUpgrade("version must be a release's version, like 1.4.0", "version")
    if not isinstance(params.get("allow_downgrade", False), bool):
        raise BadUpgrade("allow_downgrade must be true or false", "allow_downgrade")
    timeout = params.get("upgrade_timeout_s", 120)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 10 <= timeout <= 3600:
        raise BadUpgrade("upgrade_timeout_s must be a whole number of seconds from 10 to 3600", "upgrade_timeout_s")


def signed_params(params: dict, sha256: str | None, size: int | None) -> dict:
    """The params an agent's signed payload carries: the release for its platform (None
    when there is none: the agent reports that it has nothing to install)."""
    return {**params, "sha256": sha256, "size": size}
