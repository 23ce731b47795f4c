"""The approval policy's pure decisions: which requests need a second person."""

import pytest

from services.dispatch.lifecycle.approval_policy import (
    Policy,
    PolicyCache,
    Request,
    approved_enough,
    needs_approval,
)

POLICY = Policy(({"command_types": ["shell"]}, {"min_targets": 100}, {"all_active": True},
                 {"labels": {"env": "prod"}}, {"command_types": ["reboot"], "labels": {"tier": "db"}}))


@pytest.mark.parametrize("request_,needed", [
    (Request("shell", 1, carried=[False, False]), True),
    (Request("ping", 99, carried=[False, False]), False),
    (Request("ping", 100, carried=[False, False]), True),
    (Request("ping", 3, all_active=True, carried=[False, False]), True),
    (Request("ping", 3, carried=[True, False]), True),   # a target carries env=prod
    (Request("reboot", 3, carried=[False, False]), False),  # every condition of a rule must hold
    (Request("reboot", 3, carried=[False, True]), True),
    (Request("ping", 3, carried=[False, True]), False),
])
def test_any_rule_matching_when_all_its_conditions_hold_needs_approval(request_, needed):
    assert needs_approval(POLICY, request_) is needed


def test_no_rules_need_nothing():
    assert not needs_approval(Policy(), Request("shell", 100_000, all_active=True))


def test_the_label_rules_come_in_rule_order():
    assert POLICY.label_rules() == [{"env": "prod"}, {"tier": "db"}]


def test_enough_counts_distinct_operators():
    ann = {"operator": {"id": "a", "name": "ann"}}
    assert not approved_enough([ann, ann], 2)
    assert approved_enough([ann, {"operator": {"id": "b", "name": "bob"}}], 2)


async def test_the_cache_reads_again_after_5_s_or_when_forgotten():
    reads = []
    clock = [0.0]

    async def read():
        reads.append(clock[0])
        return Policy()

    cache = PolicyCache(read, clock=lambda: clock[0])
    await cache.get()
    clock[0] = 4.9
    await cache.get()
    assert len(reads) == 1
    clock[0] = 5.1
    await cache.get()
    cache.forget()
    await cache.get()
    assert len(reads) == 3
