"""What a release download honours of `Range`, and what an operator may give an upgrade
(services/dispatch/releases/): pure rules, in milliseconds."""

from __future__ import annotations

import pytest

from services.dispatch.releases import rules
from services.dispatch.releases.ranges import Unsatisfiable, byte_range


@pytest.mark.parametrize("header, expected", [
    (None, None), ("bytes=0-99", (0, 99)), ("bytes=100-", (100, 999)), ("bytes=-100", (900, 999)),
    ("bytes=990-5000", (990, 999)), ("bytes=-5000", (0, 999)), ("bytes=0-0", (0, 0)),
    ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=5-1", None), ("bytes=-", None), ("garbage", None),
    ("bytes=99999999999999999999-", None),  # longer than any size: not a range we read
])
def test_one_byte_range_or_the_whole(header, expected):
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_is_unsatisfiable(header):
    with pytest.raises(Unsatisfiable):
        byte_range(header, 1000)


@pytest.mark.parametrize("params", [
    {"version": "1.4.0"}, {"version": "1.4.0", "allow_downgrade": True}, {"version": "2.0.0-rc1+b7"},
    {"version": "1.4.0", "upgrade_timeout_s": 10}, {"version": "1.4.0", "upgrade_timeout_s": 3600},
])
def test_what_an_operator_may_give(params):
    rules.check_params(params)


@pytest.mark.parametrize("params, field", [
    ({}, "version"), ({"version": ""}, "version"), ({"version": "../x"}, "version"),
    ({"version": "1" * 65}, "version"), ({"version": 14}, "version"),
    ({"version": "1.4.0", "sha256": "00" * 32}, "sha256"), ({"version": "1.4.0", "size": 1}, "size"),
    ({"version": "1.4.0", "url": "http://evil"}, "url"),
    ({"version": "1.4.0", "allow_downgrade": "yes"}, "allow_downgrade"),
    ({"version": "1.4.0", "upgrade_timeout_s": 9}, "upgrade_timeout_s"),
    ({"version": "1.4.0", "upgrade_timeout_s": True}, "upgrade_timeout_s"),
])
def test_what_is_refused_names_its_field(params, field):
    with pytest.raises(rules.BadUpgrade) as refused:
        rules.check_params(params)
    assert refused.value.field == field


def test_the_signed_params_carry_the_servers_digest():
    assert rules.signed_params({"version": "1.4.0"}, "ab" * 32, 10) == {
        "version": "1.4.0", "sha256": "ab" * 32, "size": 10}
