"""The agent's timing policies, as pure functions of their inputs and a random source.

- Jitter before each poll: uniform in [0, min(interval / 2, 30 s)], so a fleet restarted
  at once does not poll in lockstep.
- Backoff after a failure (connection error, 5xx): attempt n (1, 2, ...) waits a uniform
  time in [10 s, min(300 s, 10 s * 2^n)] ("full jitter" above a floor); a server's
  Retry-After wins when it is longer. A success resets the attempt count.
- A `429` with Retry-After waits what the server said plus a jitter of up to as much again
  (at most 30 s), never the longest backoff: the server knows when there is room (a mass
  enrolment refused for a second comes back within two, not five minutes later).
"""

from __future__ import annotations

import random

JITTER_CAP_S = 30.0
BACKOFF_FLOOR_S = 10.0
BACKOFF_CAP_S = 300.0


def poll_jitter(interval_s: float, rng: random.Random) -> float:
    return rng.uniform(0.0, min(max(interval_s, 0.0) / 2.0, JITTER_CAP_S))


def backoff_ceiling(attempt: int) -> float:
    """The longest wait of attempt n (n >= 1), without overflowing for huge n."""
    if attempt >= 6:  # 10 * 2^5 = 320 > 300 already
        return BACKOFF_CAP_S
    return min(BACKOFF_CAP_S, BACKOFF_FLOOR_S * 2 ** max(attempt, 1))


def backoff_delay(attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
    delay = rng.uniform(BACKOFF_FLOOR_S, backoff_ceiling(attempt))
    if retry_after_s is not None and retry_after_s > delay:
        return retry_after_s
    return delay


def rate_limited_delay(retry_after_s: float, rng: random.Random) -> float:
    """A 429's wait: the Retry-After, plus a jitter of up to as much again (at least 1 s, at
    most JITTER_CAP_S), so agents refused together do not all come back in the same instant."""
    return retry_after_s + rng.uniform(0.0, min(max(retry_after_s, 1.0), JITTER_CAP_S))


class Backoff:
    """Counts consecutive failures; the delays themselves come from backoff_delay() (or
    rate_limited_delay() for a 429 that says when to come back)."""

    def __init__(self, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self, retry_after_s: float | None = None, rate_limited: bool = False) -> float:
        self.attempt += 1
        if rate_limited and retry_after_s is not None:
            return rate_limited_delay(retry_after_s, self.rng)
        return backoff_delay(self.attempt, self.rng, retry_after_s)

    def reset(self) -> None:
        self.attempt = 0


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the only form Fleetline sends); anything else is ignored."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 86400 else None
