"""Refresh-token rotation decisions, from the facts read under the family's lock."""

import uuid
from datetime import datetime, timezone

import pytest

from services.auth.rotation import Renewal, decide

T = datetime(2026, 11, 27, tzinfo=timezone.utc)


def token(consumed=False, revoked=False, successor=None):
    """successor: None, "unused", "used" or "revoked"."""
    return {"consumed_at": T if consumed else None, "revoked_at": T if revoked else None,
            "superseded_by": uuid.uuid4() if successor else None,
            "successor_consumed_at": T if successor == "used" else None,
            "successor_revoked_at": T if successor == "revoked" else None}


def test_an_unused_token_rotates():
    assert decide(token()) is Renewal.ROTATE


def test_a_consumed_token_whose_successor_was_never_used_gets_the_grace():
    assert decide(token(consumed=True, successor="unused")) is Renewal.GRACE


@pytest.mark.parametrize("successor", ["used", "revoked", None])
def test_a_consumed_token_presented_again_otherwise_is_reuse(successor):
    assert decide(token(consumed=True, successor=successor)) is Renewal.REUSE


def test_a_revoked_token_is_refused():
    assert decide(token(revoked=True)) is Renewal.REFUSE
