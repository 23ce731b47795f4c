"""The rollout rules of a job, as pure decisions over its counts (no I/O).

A job's targets are counted by what an operator sees (`TARGET_STATUSES`): its commands'
statuses, with two more words: `waiting` (held back by the rollout window, not yet
claimable) and `skipped` (cancelled because the job halted). From those counts alone,
`next_step` decides what the job does next: halt, complete, or release more commands.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from fleetline import statuses

TARGET_STATUSES = statuses.TARGET_STATUSES
# Ends that count against max_failures (cancelled and skipped do not).
FAILURES = frozenset(statuses.FAILURES)
# Occupies the window: released (claimable now) or delivered, and not final.
IN_WINDOW = frozenset(statuses.COMMAND_LIVE)
NOT_FINAL = frozenset(statuses.TARGET_LIVE)
JOB_STATUSES = statuses.JOB_STATUSES

_PERCENT = re.compile(r"([0-9]{1,3})%")


def window_size(max_in_flight: int | str | None, target_count: int) -> int | None:
    """The window as a number of commands: a percentage of the targets is rounded up (a
    window of at least one), a number is itself, None means no window."""
    if max_in_flight is None or isinstance(max_in_flight, int):
        return max_in_flight
    match = _PERCENT.fullmatch(max_in_flight)
    assert match is not None  # the API accepts only what percentage() does
    percent = int(match.group(1))
    return max(1, math.ceil(target_count * percent / 100))


# A window that holds every waiting command (a canary job without max_in_flight, once its
# canaries succeeded): what RELEASE_WAITING's LIMIT takes.
UNLIMITED = 2**31 - 1


def first_window(window: int | None, canary: int | None) -> int | None:
    """The window a job opens with: only its canary targets, when it names some."""
    if canary is None:
        return window
    return canary if window is None else min(canary, window)


def due_at_start(window: int | None, canary: int | None, made: int, whole: bool) -> int:
    """How many of a job's `made` new commands are due at once (the rest wait for the
    releaser): all of them without a window; with one, as many as it holds when the job's
    commands are made whole (its creation, its approval), none when they come in slices
    after it started (the releaser fills the window from what is running then). A canary
    job opens with its canaries only (first_window)."""
    window = first_window(window, canary)
    if window is None:
        return made
    return min(window, made) if whole else 0


def percentage(text: str) -> bool:
    """Whether `text` is a window percentage this API accepts: "1%" to "100%"."""
    match = _PERCENT.fullmatch(text)
    return match is not None and 1 <= int(match.group(1)) <= 100


def tally(rows: Iterable[Mapping]) -> dict[str, int]:
    """Every target status with its count (zeros included), from (status, n) rows."""
    counts = dict.fromkeys(TARGET_STATUSES, 0)
    for row in rows:
        counts[row["status"]] += row["n"]
    return counts


@dataclass(frozen=True)
class Step:
    halt: bool = False
    complete: bool = False
    release: int = 0
    why: str = field(default="", compare=False)  # a halt's reason, for the job's halted_reason


@dataclass(frozen=True)
class Progress:
    """What moving a job on needs to know, each fact bounded so it stays cheap however
    many targets the job has (queries.JOB_PROGRESS)."""

    unfinished: bool       # a target not final (waiting, pending, sent or running)
    waiting: bool          # a target held back by the window
    in_window: int         # released or delivered and not final (read only with a window)
    failures: int          # failed ends, counted up to max_failures + 1 (only with a limit or a canary)
    succeeded: int = 0     # succeeded ends, counted up to the canary (only with one)


def failures(counts: Mapping[str, int]) -> int:
    return sum(counts[s] for s in FAILURES)


def progress(counts: Mapping[str, int]) -> Progress:
    """The same facts from full counts (what the API shows)."""
    return Progress(unfinished=any(counts[s] for s in NOT_FINAL), waiting=counts["waiting"] > 0,
                    in_window=sum(counts[s] for s in IN_WINDOW), failures=failures(counts),
                    succeeded=counts["succeeded"])


def next_step(p: Progress, max_in_flight: int | None, max_failures: int | None,
              canary: int | None = None) -> Step:
    """What a running job does next. Halting comes first: once more targets failed than
    allowed (exceeded, not equalled), nothing more is delivered; with a canary, once any
    target failed before `canary` of them succeeded. A job whose targets are all final
    completes. Otherwise the window is refilled from the waiting commands (the release
    takes what is there, up to the free slots): while the canary is unproven, only as many
    as still have to succeed; after it, max_in_flight (or everything, without one)."""
    if max_failures is not None and p.failures > max_failures:
        return Step(halt=True, why=f"more than max_failures {max_failures} targets ended failed, timed_out, "
                                   "expired or rejected")
    proving = canary is not None and p.succeeded < canary
    if proving and p.failures > 0:
        return Step(halt=True, why=f"a canary target failed before {canary} succeeded")
    if not p.unfinished:
        return Step(complete=True)
    if proving:
        assert canary is not None
        window: int | None = first_window(max_in_flight, canary - p.succeeded)
    else:
        window = UNLIMITED if max_in_flight is None and canary is not None else max_in_flight
    if window is None or not p.waiting:
        return Step()
    return Step(release=max(window - p.in_window, 0))
