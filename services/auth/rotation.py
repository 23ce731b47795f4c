"""Refresh-token rotation: what a renewal does with the token presented, decided from the
facts read under the family's lock. Pure; the statements are in queries.py.

    unused token                         -> ROTATE: consume it, issue its successor
    consumed, successor never used       -> GRACE: the agent lost the answer (crashed before
                                            saving it); revoke that successor, issue another
    consumed, successor used (or gone)   -> REUSE: theft or a bug; revoke the whole family
    revoked (never consumed)             -> REFUSE
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Mapping

REUSE_REASON = "reuse"  # a family's revoked_reason after a detected reuse


class Renewal(Enum):
    ROTATE = "rotate"
    GRACE = "grace"
    REUSE = "reuse"
    REFUSE = "refuse"


def decide(token: Mapping[str, Any]) -> Renewal:
    """`token`: consumed_at, revoked_at, superseded_by, successor_consumed_at,
    successor_revoked_at (TOKEN_STATE)."""
    if token["consumed_at"] is None:
        return Renewal.REFUSE if token["revoked_at"] is not None else Renewal.ROTATE
    unused_successor = (token["superseded_by"] is not None and token["successor_consumed_at"] is None
                        and token["successor_revoked_at"] is None)
    return Renewal.GRACE if unused_successor else Renewal.REUSE
