"""When a schedule's ticks fall and what one pass of the ticker does with those due: pure
decisions, the clock always passed in (never read, never slept for).

- Cron expressions are cronsim's (five fields, ranges, lists, steps, month and weekday
  names) plus the aliases @hourly, @daily, @weekly, @monthly (and @midnight, @yearly,
  @annually), evaluated in the schedule's IANA time zone (zoneinfo, with tzdata).
- Daylight-saving time (docs/api.md): a wall-clock time that does not exist that day runs
  once at the first instant after the gap (cronsim does so); one that occurs twice runs
  once, at its first occurrence (its second, `fold=1`, is passed over here).
- Intervals tick at anchor + k * interval_s, whatever the zone.
- Catch-up: ticks due when the ticker looks that are older than GRACE_S (no dispatch ran,
  or the schedule was paused) were missed. `skip` records them as one `skipped_missed` run
  and starts nothing for them; `latest` starts the latest of them at once and records the
  rest. A tick within GRACE_S is simply late, and starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from services.common.operators import Scope, role_allows

GRACE_S = 30.0  # a tick later than this when the ticker sees it was missed (no dispatch ran), not late
MAX_COUNTED = 100_000  # missed ticks counted one by one up to here (the detail says "at least")
ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
           "@annually": "0 0 1 1 *"}
OVERLAPS = ("skip", "allow")
CATCH_UPS = ("skip", "latest")


class BadTiming(ValueError):
    """A cron expression or time zone that cannot be used; the message says why."""


def expression(cron: str) -> str:
    """The five-field expression a cron string means (an alias expanded), or BadTiming."""
    text = ALIASES.get(cron.strip().lower(), cron.strip())
    if len(text.split()) != 5:
        raise BadTiming("cron must have five fields (minute hour day month weekday) or be one of "
                        + ", ".join(sorted(ALIASES)))
    try:
        CronSim(text, datetime(2026, 1, 1, tzinfo=timezone.utc))
    except CronSimError as exc:
        raise BadTiming(f"cron is not a valid expression: {exc}") from None
    return text


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadTiming(f"timezone {name!r} is not an IANA time zone") from None


@dataclass(frozen=True)
class Timing:
    cron: str | None
    timezone: str
    interval_s: int | None
    anchor: datetime  # intervals only: their ticks are anchor + k * interval_s

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after `after`, in UTC."""
        if self.interval_s is not None:
            k = math.floor((after - self.anchor).total_seconds() / self.interval_s) + 1
            tick = self.anchor + timedelta(seconds=k * self.interval_s)
            while tick <= after:  # float rounding at a boundary
                tick += timedelta(seconds=self.interval_s)
            return tick.astimezone(timezone.utc)
        assert self.cron is not None
        local = after.astimezone(zone(self.timezone))
        for tick in CronSim(expression(self.cron), local):
            if tick.fold == 1 and tick.replace(fold=0).astimezone(timezone.utc) != tick.astimezone(timezone.utc):
                continue  # the second occurrence of a wall-clock time: it ran at the first
            if tick > after:
                return tick.astimezone(timezone.utc)
        raise BadTiming("cron never matches")  # cronsim ends only for impossible dates (Feb 30)

    def due(self, first: datetime, now: datetime) -> tuple[int, datetime | None, datetime | None]:
        """How many ticks from `first` (a tick) to `now` are due, the latest of them and
        the one before it: (count, latest, previous)."""
        latest: datetime | None = None
        previous: datetime | None = None
        if first > now:
            return 0, latest, previous
        if self.interval_s is not None:
            count = math.floor((now - first).total_seconds() / self.interval_s) + 1
            latest = first + timedelta(seconds=(count - 1) * self.interval_s)
            previous = latest - timedelta(seconds=self.interval_s) if count > 1 else None
            return count, latest, previous
        count, tick = 0, first
        while tick <= now:
            count, previous, latest = count + 1, latest, tick
            if count >= MAX_COUNTED:
                break
            tick = self.next_after(tick)
        return count, latest, previous


@dataclass(frozen=True)
class Plan:
    """What one look at a due schedule does."""
    start: datetime | None         # the tick to start a job for now (None: nothing starts)
    missed: int                    # ticks recorded together as one `skipped_missed` run
    missed_first: datetime | None
    missed_last: datetime | None   # the skipped run's scheduled_for
    next_run_at: datetime          # the first tick after now


def plan(timing: Timing, next_run_at: datetime, now: datetime, catch_up: str, grace_s: float = GRACE_S) -> Plan:
    count, latest, previous = timing.due(next_run_at, now)
    after = timing.next_after(now)
    if count == 0 or latest is None:
        return Plan(None, 0, None, None, after)
    if catch_up == "latest" or (now - latest).total_seconds() <= grace_s:
        missed_last = previous if count > 1 else None
        return Plan(latest, count - 1, next_run_at if count > 1 else None, missed_last, after)
    return Plan(None, count, next_run_at, latest, after)


def missed_detail(p: Plan) -> str:
    many = f"at least {p.missed}" if p.missed >= MAX_COUNTED else str(p.missed)
    assert p.missed_first is not None and p.missed_last is not None
    return (f"{many} tick{'s' if p.missed != 1 else ''} missed, from {p.missed_first.isoformat()} "
            f"to {p.missed_last.isoformat()}")


def authority_problem(creator: dict | None, selector: dict, command_type: str) -> str | None:
    """Why the schedule's creator may no longer start its jobs (None: it may). `creator`:
    the operator's row (id, role, scope, disabled_at) as it is now; scope checked as a
    request of its own would be (agent ids named are checked against the database)."""
    if creator is None:
        return "its creator no longer exists"
    if creator["disabled_at"] is not None:
        return "its creator is disabled"
    if not role_allows(creator["role"], "operator"):
        return f"its creator's role ({creator['role']}) may not run commands"
    scope = Scope.of(creator["role"], creator["scope"])
    if not scope.allows_type(command_type):
        return f"the command type {command_type!r} is outside its creator's scope"
    wanted = selector.get("labels") or {}
    if any(wanted.get(k, v) != v for k, v in scope.labels.items()):
        return "its selector is outside its creator's scope"
    return None
