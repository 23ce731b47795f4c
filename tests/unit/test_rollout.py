"""The rollout rules of a job as pure decisions: window sizes, halting, completion and how
many waiting commands to release."""

import pytest

from gateway.openapi import TARGET_STATUSES as DOCUMENTED
from services.dispatch.lifecycle import rollout
from services.dispatch.lifecycle.rollout import Step, tally, window_size


def counts(**given: int) -> dict:
    return {**dict.fromkeys(rollout.TARGET_STATUSES, 0), **given}


def next_step(given: dict, max_in_flight, max_failures) -> Step:
    """The decision from full counts, as the job's facts would report them."""
    return rollout.next_step(rollout.progress(given), max_in_flight, max_failures)


@pytest.mark.parametrize("given,targets,expected", [
    (None, 10, None), (3, 10, 3), (3, 1, 3),
    ("10%", 10, 1), ("10%", 11, 2), ("1%", 5, 1), ("100%", 7, 7), ("50%", 3, 2),
])
def test_a_percentage_window_rounds_up_and_is_never_empty(given, targets, expected):
    assert window_size(given, targets) == expected


@pytest.mark.parametrize("text,ok", [
    ("1%", True), ("100%", True), ("10%", True), ("0%", False), ("101%", False),
    ("10", False), ("%", False), ("1.5%", False), (" 10%", False), ("１０%", False), ("10%%", False),
])
def test_only_whole_percentages_from_1_to_100_are_windows(text, ok):
    assert rollout.percentage(text) is ok


def test_failures_beyond_the_limit_halt_but_equalling_it_does_not():
    at_limit = counts(failed=1, timed_out=1, running=1, waiting=5)
    assert next_step(at_limit, 2, 2) == Step(release=1)
    assert next_step(counts(failed=1, expired=1, rejected=1, waiting=5), 2, 2) == Step(halt=True)


def test_cancelled_and_skipped_are_not_failures():
    assert next_step(counts(cancelled=5, skipped=3, succeeded=1), None, 0) == Step(complete=True)


def test_the_halt_comes_before_completion():
    assert next_step(counts(failed=3), None, 0) == Step(halt=True)


def test_a_job_completes_when_nothing_is_waiting_or_live():
    assert next_step(counts(succeeded=4, failed=1, expired=1), None, None) == Step(complete=True)
    assert next_step(counts(succeeded=4, sent=1), None, None) == Step()


@pytest.mark.parametrize("live,waiting,window,release", [
    ({"running": 2}, 5, 2, 0),                  # full
    ({"running": 1}, 5, 2, 1),                  # one slot free
    ({"pending": 1, "sent": 1}, 5, 3, 1),       # released-but-unclaimed occupy the window
    ({}, 5, 10, 10),                            # the release takes what is waiting, up to this
    ({"running": 4}, 3, 2, 0),                  # over the window releases nothing
])
def test_the_window_is_refilled_up_to_its_size(live, waiting, window, release):
    assert next_step(counts(waiting=waiting, succeeded=1, **live), window, None) == Step(release=release)


def test_without_a_window_nothing_is_ever_released():
    assert next_step(counts(waiting=3, running=1), None, None) == Step()


def test_tally_names_every_status_and_counts_add_up():
    got = tally([{"status": "waiting", "n": 3}, {"status": "skipped", "n": 2}, {"status": "waiting", "n": 1}])
    assert got == counts(waiting=4, skipped=2)
    assert list(got) == list(rollout.TARGET_STATUSES)


def test_the_documented_target_statuses_are_the_ones_counted():
    assert tuple(DOCUMENTED) == rollout.TARGET_STATUSES


def test_the_facts_are_read_bounded_and_the_decision_needs_no_more():
    # Failures counted only up to max_failures + 1 decide the halt as full counts would.
    capped = rollout.Progress(unfinished=True, waiting=True, in_window=0, failures=3)
    assert rollout.next_step(capped, 5, 2) == Step(halt=True)
    assert rollout.next_step(rollout.Progress(False, False, 0, 0), None, None) == Step(complete=True)


@pytest.mark.parametrize("given,window,canary,expected", [
    ({"waiting": 9, "running": 1}, None, 1, Step()),                 # the canary runs: the rest wait
    ({"waiting": 9, "succeeded": 1}, None, 1, Step(release=rollout.UNLIMITED)),  # proven: all of them
    ({"waiting": 9, "succeeded": 1}, 3, 1, Step(release=3)),         # proven: then the window
    ({"waiting": 8, "succeeded": 1, "running": 1}, None, 2, Step()),  # one of two still proving
    ({"waiting": 9, "succeeded": 1}, 1, 2, Step(release=1)),         # window 1: the second canary next
    ({"waiting": 9, "failed": 1}, None, 1, Step(halt=True)),         # a canary failed: halt
    ({"waiting": 8, "failed": 1, "succeeded": 1}, None, 1, Step(release=rollout.UNLIMITED)),  # after: the limit's
])
def test_a_canary_goes_first_and_the_rest_wait_until_it_succeeded(given, window, canary, expected):
    step = rollout.next_step(rollout.progress(counts(**given)), window, None, canary)
    assert step == expected
    if step.halt:
        assert "canary" in step.why


def test_a_canary_job_opens_with_its_canaries_only():
    assert rollout.first_window(None, 2) == 2 and rollout.first_window(5, 2) == 2
    assert rollout.first_window(1, 2) == 1 and rollout.first_window(5, None) == 5
    assert rollout.due_at_start(None, 1, 100, whole=True) == 1 and rollout.due_at_start(5, 2, 100, whole=False) == 0
