"""The state machine's decisions (services/dispatch/lifecycle/commands.py) on plain rows: what an ack,
a result or a queueing statement found, and what the API answers. No database here; the
statements themselves are proven under concurrency in tests/integration."""

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from services.dispatch.api_errors import to_api_error
from services.dispatch.lifecycle import approvals
from services.dispatch.lifecycle import commands as c

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def row(status="sent", new_status=None, agent_status="active", exists=True, **extra):
    base = {"agent_status": agent_status, "in_scope": True, "id": uuid.uuid4() if exists else None,
            "status": status if exists else None, "new_status": new_status,
            "new_acked_at": NOW if new_status else None, "acked_at": None,
            "new_finished_at": NOW if new_status else None, "new_result": None, "result": None}
    base.update(extra)
    return base


# --- who is asking --------------------------------------------------------------------

def test_an_agent_without_a_row_is_unknown_and_a_revoked_one_is_refused():
    with pytest.raises(c.UnknownAgent):
        c.ack_outcome(None)
    with pytest.raises(c.AgentRevoked):
        c.ack_outcome(row(agent_status="revoked"))
    with pytest.raises(c.AgentRevoked):
        c.result_outcome(row(agent_status="revoked"), "succeeded", {})


def test_a_command_of_another_agent_is_not_found():
    with pytest.raises(c.CommandNotFound):
        c.ack_outcome(row(exists=False))
    with pytest.raises(c.CommandNotFound):
        c.result_outcome(row(exists=False), "failed", {})


# --- ack --------------------------------------------------------------------------------

def test_an_ack_that_moved_the_command_answers_running_with_its_ack_time():
    answer = c.ack_outcome(row("sent", new_status="running"))
    assert answer["status"] == "running" and answer["acked_at"] == NOW


@pytest.mark.parametrize("status", ["running", *sorted(c.FINAL)])
def test_a_repeated_or_late_ack_answers_the_status_as_it_is(status):
    # The agent runs a command only when the answer says running: a final one never.
    assert c.ack_outcome(row(status))["status"] == status


def test_an_ack_for_a_command_never_delivered_is_refused():
    with pytest.raises(c.NotDelivered):
        c.ack_outcome(row("pending"))


# --- result -------------------------------------------------------------------------------

def test_a_result_that_ended_the_command_says_so():
    result = {"exit_code": 0, "output": "ok"}
    answer, ended = c.result_outcome(row("running", new_status="succeeded", new_result=result),
                                     "succeeded", result)
    assert ended and answer["status"] == "succeeded" and answer["result"] == result


def test_the_same_outcome_again_is_a_no_op():
    stored = {"exit_code": 3, "output": "x"}
    answer, ended = c.result_outcome(row("failed", result=stored), "failed", {"exit_code": 3})
    assert not ended and answer["status"] == "failed"


@pytest.mark.parametrize("status,outcome,code", [
    ("succeeded", "failed", 0), ("failed", "succeeded", 1), ("failed", "failed", 2),
])
def test_another_outcome_for_an_ended_command_is_a_conflict(status, outcome, code):
    with pytest.raises(c.OtherOutcome) as err:
        c.result_outcome(row(status, result={"exit_code": 1}), outcome, {"exit_code": code})
    assert err.value.status == status


@pytest.mark.parametrize("status", ["timed_out", "expired", "cancelled"])
def test_a_result_after_timeout_expiry_or_cancel_changes_nothing(status):
    with pytest.raises(c.AlreadyFinal) as err:
        c.result_outcome(row(status), "succeeded", {"exit_code": 0})
    assert err.value.status == status and not isinstance(err.value, c.OtherOutcome)


def test_a_result_for_a_pending_command_is_refused():
    with pytest.raises(c.NotDelivered):
        c.result_outcome(row("pending"), "succeeded", {})


# --- queueing -----------------------------------------------------------------------------

def test_queueing_for_an_unknown_or_revoked_agent_is_refused():
    with pytest.raises(c.NoSuchTarget):
        c.create_outcome(None)
    with pytest.raises(c.TargetRevoked):
        c.create_outcome(row(agent_status="revoked"))


def test_an_agent_or_a_type_outside_the_operators_scope_is_refused():
    from services.common.operators import Scope

    with pytest.raises(c.OutOfScope, match="agent is outside"):
        c.create_outcome(row(in_scope=False))
    with pytest.raises(c.OutOfScope, match="outside"):  # before revoked: nothing said about it
        c.create_outcome(row(in_scope=False, agent_status="revoked"))
    staging = Scope({"env": "staging"}, ("ping", "facts"))
    c.check_type(staging, "ping")
    with pytest.raises(c.OutOfScope, match="'shell'"):
        c.check_type(staging, "shell")
    c.check_type(Scope(), "shell")


def test_a_repeated_idempotency_key_creates_nothing():
    assert c.create_outcome(row(exists=False)) is None
    created = row("pending")
    assert c.create_outcome(created) is created


# --- poll interval ----------------------------------------------------------------------------

POLICY = c.PollPolicy(standard_s=300, rapid_s=5, rapid_window_s=600)


def test_rapid_while_commands_arrive_or_run_standard_otherwise():
    assert POLICY.interval_s(True, None, None, NOW) == 5
    assert POLICY.interval_s(False, True, None, NOW) == 5
    assert POLICY.interval_s(False, False, NOW - timedelta(seconds=599), NOW) == 5
    assert POLICY.interval_s(False, False, NOW - timedelta(seconds=600), NOW) == 300
    assert POLICY.interval_s(False, False, None, NOW) == 300


# --- the reaper's batches -------------------------------------------------------------------

def test_a_sweep_repeats_while_batches_come_back_full():
    backlog = [2500]
    calls = []

    async def step(n):
        moved = min(n, backlog[0])
        backlog[0] -= moved
        calls.append(moved)
        return moved

    assert asyncio.run(c.sweep(step, 1000)) == 2500
    assert calls == [1000, 1000, 500]


def test_an_exactly_full_last_batch_costs_one_empty_step():
    calls = []

    async def step(n):
        calls.append(n)
        return 1000 if len(calls) == 1 else 0

    assert asyncio.run(c.sweep(step, 1000)) == 1000
    assert len(calls) == 2


def test_update_counts_are_read_from_the_command_tag():
    assert c.updated_rows("UPDATE 17") == 17 and c.updated_rows("UPDATE 0") == 0


# --- one table maps refusals to the API's errors -----------------------------------------------

@pytest.mark.parametrize("exc,status,code", [
    (c.UnknownAgent(), 401, "invalid_token"),
    (c.AgentRevoked(), 403, "agent_revoked"),
    (c.CommandNotFound(), 404, "not_found"),
    (c.NoSuchTarget(), 404, "not_found"),
    (c.TargetRevoked(), 409, "conflict"),
    (c.NotDelivered(), 409, "conflict"),
    (c.OtherOutcome("failed"), 409, "conflict"),
    (c.AlreadyFinal("expired"), 409, "conflict"),
])
def test_every_refusal_has_its_api_error(exc, status, code):
    err = to_api_error(exc)
    assert (err.status, err.code) == (status, code)


def test_every_refusal_class_is_in_the_table():
    from services.dispatch.api_errors import ERRORS

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    assert set(subclasses(c.CommandError)) <= set(ERRORS)
    assert set(subclasses(approvals.ApprovalError)) <= set(ERRORS)


def test_transitions_only_leave_statuses_that_are_not_final():
    assert {old for old, _ in c.TRANSITIONS} <= c.LIVE | {"awaiting_approval"}
    assert not {old for old, _ in c.TRANSITIONS} & c.FINAL
    assert {new for _, new in c.TRANSITIONS} <= set(c.STATUSES)
    # Approval leads only to pending (signed, due); nothing reaches sent without a claim.
    assert {new for old, new in c.TRANSITIONS if old == "awaiting_approval"} == {"pending", "denied", "cancelled"}


def test_a_running_command_with_a_cancel_asked_is_shown_as_cancelling_until_it_ends():
    from fleetline import statuses

    assert statuses.shown({"status": "running", "cancel_requested_at": "2026-12-07T10:00:00Z"}) == "cancelling..."
    assert statuses.shown({"status": "running", "cancel_requested_at": None}) == "running"
    assert statuses.shown({"status": "cancelled", "cancel_requested_at": "2026-12-07T10:00:00Z"}) == "cancelled"
