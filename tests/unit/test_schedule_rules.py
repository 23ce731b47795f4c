"""When a schedule's ticks fall and what the ticker does with those due, the clock passed in:
daylight-saving days of real zones (Europe/Berlin 2026-03-29 and 2026-10-25,
America/New_York 2026-03-08 and 2026-11-01), intervals, catch-up after a gap for both
policies, and the creator's authority."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.dispatch.lifecycle import schedule_rules as rules

UTC = timezone.utc
BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def cron(expr: str, tz: str = "UTC") -> rules.Timing:
    return rules.Timing(expr, tz, None, ANCHOR)


def ticks(timing: rules.Timing, after: datetime, n: int) -> list[datetime]:
    out = []
    for _ in range(n):
        after = timing.next_after(after)
        out.append(after)
    return out


def local(ts: list[datetime], tz: ZoneInfo) -> list[str]:
    return [t.astimezone(tz).strftime("%m-%d %H:%M%z") for t in ts]


def test_a_time_the_spring_gap_skips_runs_once_at_the_first_instant_after_it():
    berlin = ticks(cron("30 2 * * *", "Europe/Berlin"), datetime(2026, 3, 28, 12, tzinfo=BERLIN), 3)
    assert local(berlin, BERLIN) == ["03-29 03:00+0200", "03-30 02:30+0200", "03-31 02:30+0200"]
    york = ticks(cron("30 2 * * *", "America/New_York"), datetime(2026, 3, 7, 12, tzinfo=NEW_YORK), 2)
    assert local(york, NEW_YORK) == ["03-08 03:00-0400", "03-09 02:30-0400"]


def test_a_time_the_autumn_repeats_runs_once_at_its_first_occurrence():
    berlin = ticks(cron("30 2 * * *", "Europe/Berlin"), datetime(2026, 10, 24, 12, tzinfo=BERLIN), 2)
    assert local(berlin, BERLIN) == ["10-25 02:30+0200", "10-26 02:30+0100"]
    york = ticks(cron("30 1 * * *", "America/New_York"), datetime(2026, 10, 31, 12, tzinfo=NEW_YORK), 2)
    assert local(york, NEW_YORK) == ["11-01 01:30-0400", "11-02 01:30-0500"]
    # Every half hour through the repeated hour: each wall-clock time once.
    half = ticks(cron("*/30 * * * *", "Europe/Berlin"), datetime(2026, 10, 25, 1, 50, tzinfo=BERLIN), 3)
    assert local(half, BERLIN) == ["10-25 02:00+0200", "10-25 02:30+0200", "10-25 03:00+0100"]
    assert half[2] - half[1] == timedelta(minutes=90)


def test_hourly_across_the_spring_gap_skips_only_the_hour_that_does_not_exist():
    hourly = ticks(cron("@hourly", "Europe/Berlin"), datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN), 3)
    assert local(hourly, BERLIN) == ["03-29 01:00+0100", "03-29 03:00+0200", "03-29 04:00+0200"]


def test_names_ranges_and_steps_in_the_schedules_zone():
    weekdays = ticks(cron("30 2 * * mon-fri", "Europe/Berlin"), datetime(2026, 12, 4, 12, tzinfo=BERLIN), 2)
    assert local(weekdays, BERLIN) == ["12-07 02:30+0100", "12-08 02:30+0100"]  # Friday noon -> Monday
    assert ticks(cron("0 0 1 jan *"), datetime(2026, 6, 1, tzinfo=UTC), 1) == [datetime(2027, 1, 1, tzinfo=UTC)]


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "* * * * * *", "@sometimes", "0 0 31 2 *x"])
def test_bad_cron_expressions_are_refused(bad):
    with pytest.raises(rules.BadTiming):
        rules.expression(bad)


def test_bad_zones_are_refused():
    with pytest.raises(rules.BadTiming):
        rules.zone("Mars/Olympus_Mons")
    with pytest.raises(rules.BadTiming):
        rules.zone("../../etc/passwd")


def test_intervals_tick_from_their_anchor_whatever_the_zone():
    every = rules.Timing(None, "Europe/Berlin", 90, ANCHOR)
    assert ticks(every, ANCHOR, 2) == [ANCHOR + timedelta(seconds=90), ANCHOR + timedelta(seconds=180)]
    assert every.next_after(ANCHOR + timedelta(seconds=100)) == ANCHOR + timedelta(seconds=180)


def test_a_tick_seen_late_but_within_the_grace_starts():
    every = rules.Timing(None, "UTC", 60, ANCHOR)
    first = ANCHOR + timedelta(seconds=60)
    p = rules.plan(every, first, first + timedelta(seconds=2), "skip")
    assert p.start == first and p.missed == 0 and p.next_run_at == first + timedelta(seconds=60)


def test_after_a_gap_skip_records_the_missed_ticks_as_one_run_and_waits_for_the_next():
    every = rules.Timing(None, "UTC", 60, ANCHOR)
    first = ANCHOR + timedelta(seconds=60)
    now = first + timedelta(minutes=10, seconds=45)  # down for ten minutes: the latest is 45 s old
    p = rules.plan(every, first, now, "skip")
    assert p.start is None and p.missed == 11
    assert (p.missed_first, p.missed_last) == (first, first + timedelta(minutes=10))
    assert p.next_run_at == first + timedelta(minutes=11)
    assert "11 ticks missed" in rules.missed_detail(p)


def test_after_a_gap_latest_starts_the_latest_at_once_and_records_the_rest():
    daily = cron("0 3 * * *", "Europe/Berlin")
    first = datetime(2026, 3, 27, 3, tzinfo=BERLIN).astimezone(UTC)
    now = datetime(2026, 3, 30, 9, tzinfo=BERLIN).astimezone(UTC)  # paused over the weekend
    p = rules.plan(daily, first, now, "latest")
    assert local([p.start], BERLIN) == ["03-30 03:00+0200"]
    assert p.missed == 3 and local([p.missed_first, p.missed_last], BERLIN) == ["03-27 03:00+0100",
                                                                                 "03-29 03:00+0200"]
    skip = rules.plan(daily, first, now, "skip")
    assert skip.start is None and skip.missed == 4
    assert local([skip.next_run_at], BERLIN) == ["03-31 03:00+0200"]


def test_nothing_due_starts_nothing():
    every = rules.Timing(None, "UTC", 60, ANCHOR)
    p = rules.plan(every, ANCHOR + timedelta(seconds=60), ANCHOR + timedelta(seconds=30), "skip")
    assert p.start is None and p.missed == 0


def test_a_years_gap_on_a_one_second_interval_is_counted_without_walking_it():
    every = rules.Timing(None, "UTC", 1, ANCHOR)
    p = rules.plan(every, ANCHOR, ANCHOR + timedelta(days=365), "skip")
    # The latest is due this instant: it starts; the year before it is one skipped run.
    assert p.start == ANCHOR + timedelta(days=365) and p.missed == 365 * 86400


OPERATOR = {"role": "operator", "scope": {"labels": {"env": "staging"}, "command_types": ["ping"]},
            "disabled_at": None}


@pytest.mark.parametrize("creator,selector,ctype,problem", [
    (OPERATOR, {"labels": {"env": "staging"}}, "ping", None),
    (OPERATOR, {"all_active": True}, "ping", None),  # its scope narrows it, as a job of its own
    (None, {"all_active": True}, "ping", "no longer exists"),
    ({**OPERATOR, "disabled_at": ANCHOR}, {"all_active": True}, "ping", "disabled"),
    ({**OPERATOR, "role": "viewer"}, {"all_active": True}, "ping", "may not run"),
    (OPERATOR, {"all_active": True}, "shell", "type 'shell'"),
    (OPERATOR, {"labels": {"env": "prod"}}, "ping", "selector is outside"),
])
def test_the_creators_authority_as_it_is_now(creator, selector, ctype, problem):
    found = rules.authority_problem(creator, selector, ctype)
    assert (found is None) if problem is None else (problem in found), found
