"""Property tests of the agent's timing policies (pure functions)."""

import random

from hypothesis import given
from hypothesis import strategies as st

from agent.timing import (
    BACKOFF_CAP_S,
    BACKOFF_FLOOR_S,
    JITTER_CAP_S,
    Backoff,
    backoff_ceiling,
    backoff_delay,
    parse_retry_after,
    poll_jitter,
    rate_limited_delay,
)

seeds = st.integers(min_value=0, max_value=2**32)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False), seeds)
def test_jitter_is_within_half_the_interval_and_the_cap(interval, seed):
    j = poll_jitter(interval, random.Random(seed))
    assert 0 <= j <= min(interval / 2, JITTER_CAP_S)


@given(st.integers(min_value=1, max_value=10**6), seeds)
def test_backoff_is_within_floor_and_exponential_ceiling(attempt, seed):
    d = backoff_delay(attempt, random.Random(seed))
    assert BACKOFF_FLOOR_S <= d <= min(BACKOFF_CAP_S, BACKOFF_FLOOR_S * 2 ** min(attempt, 10))
    assert d <= BACKOFF_CAP_S


@given(st.integers(min_value=1, max_value=50))
def test_ceiling_doubles_until_the_cap(attempt):
    assert backoff_ceiling(attempt) == min(300.0, 10.0 * 2 ** attempt)
    assert backoff_ceiling(attempt + 1) >= backoff_ceiling(attempt)


@given(st.integers(min_value=1, max_value=100), seeds, st.floats(min_value=0, max_value=86400))
def test_a_longer_retry_after_wins_a_shorter_one_does_not(attempt, seed, retry_after):
    plain = backoff_delay(attempt, random.Random(seed))
    with_hint = backoff_delay(attempt, random.Random(seed), retry_after)
    assert with_hint == max(plain, retry_after)


@given(st.lists(st.booleans(), min_size=1, max_size=40), seeds)
def test_backoff_counts_failures_and_resets_after_success(outcomes, seed):
    b = Backoff(random.Random(seed))
    failures = 0
    for ok in outcomes:
        if ok:
            b.reset()
            failures = 0
        else:
            delay = b.next_delay()
            failures += 1
            assert b.attempt == failures
            assert BACKOFF_FLOOR_S <= delay <= backoff_ceiling(failures)
    if outcomes[-1]:
        assert b.attempt == 0


def test_jitter_uses_its_whole_range():
    rng = random.Random(3)
    samples = [poll_jitter(300, rng) for _ in range(2000)]
    assert max(samples) > 29 and min(samples) < 1


@given(st.text(max_size=20))
def test_retry_after_parsing_never_raises(text):
    value = parse_retry_after(text)
    assert value is None or 0 <= value <= 86400


def test_retry_after_forms():
    assert parse_retry_after("37") == 37 and parse_retry_after(" 5 ") == 5
    assert parse_retry_after("-1") is None and parse_retry_after("Wed, 21 Oct 2015") is None
    assert parse_retry_after(None) is None


@given(st.integers(min_value=0, max_value=50), seeds, st.floats(min_value=0, max_value=86400))
def test_a_429_waits_its_retry_after_plus_a_bounded_jitter_whatever_the_attempt(failures, seed, retry_after):
    backoff = Backoff(random.Random(seed))
    for _ in range(failures):
        backoff.next_delay()  # however long it has been failing
    delay = backoff.next_delay(retry_after, rate_limited=True)
    assert retry_after <= delay <= retry_after + min(max(retry_after, 1.0), JITTER_CAP_S)
    assert rate_limited_delay(1.0, random.Random(seed)) <= 2.0  # a mass enrolment's 429: back in 2 s


def test_a_429_without_retry_after_backs_off_as_any_failure():
    delay = Backoff(random.Random(7)).next_delay(None, rate_limited=True)
    assert BACKOFF_FLOOR_S <= delay <= backoff_ceiling(1)
