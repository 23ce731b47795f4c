"""Held long polls, parked at no cost (the shape of Elastic Fleet Server's dispatcher and
River's notifier): a held poll claims once when it arrives, then parks in an
`agent -> polls` map and runs no SQL until something is due for its agent. Parked, it is
its own request task waiting for its client to leave, under a timeout that a wake-up
brings forward to now.

What wakes a parked poll:
- a command queued for its agent: the LISTEN connection (listener.py) calls `wake`;
- a lease coming due (a redelivery), with no event to say so: a min-heap of
  `(due, agent)` for the leases this process handed out, with one timer on its head, plus
  a look-ahead sweep every SWEEP_S for leases handed out by other replicas (lease_sweep.py);
- its deadline (one timer), or its client going away (then it claims nothing).
While LISTEN is down, parked polls also re-check every RECHECK_S.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Callable

from fleetline.http import departure

RECHECK_S = 5.0  # only while the LISTEN connection is down
LEASE_SLACK_S = 0.05  # wake just after a lease's due time, so the database agrees it is due

WOKEN, DEADLINE, DEPARTED = "woken", "deadline", "departed"


class _Parked:
    """One parked poll: the timeout its task waits under, and what its expiry means."""

    __slots__ = ("timeout", "reason")

    def __init__(self, reason: str):
        self.timeout: asyncio.Timeout | None = None
        self.reason = reason


class Waiters:
    def __init__(self) -> None:
        self._parked: dict[str, set[_Parked]] = {}
        self._leases: list[tuple[float, str]] = []  # (loop time due, agent id), a min-heap
        self._next_due: dict[str, float] = {}  # each agent's earliest entry in the heap
        self._lease_timer: asyncio.TimerHandle | None = None

    # --- parking --------------------------------------------------------------------------

    async def park(self, agent_id: str, deadline: float, receive: Callable,
                   recheck_s: float | None = None) -> str:
        """Wait until something may be due for the agent (WOKEN), `deadline` (loop time)
        passes (DEADLINE), or the HTTP client goes away (DEPARTED).

        The poll's own task waits for its client's disconnect under an asyncio timeout,
        and a wake-up is that timeout brought forward to now: no second task, future or
        callback per parked poll (they were a fifth of what a held poll cost)."""
        loop = asyncio.get_running_loop()
        wake_at, reason = deadline, DEADLINE
        if recheck_s is not None and loop.time() + recheck_s < deadline:
            wake_at, reason = loop.time() + recheck_s, WOKEN
        parked = _Parked(reason)
        polls = self._parked.setdefault(agent_id, set())
        try:
            async with asyncio.timeout_at(wake_at) as parked.timeout:
                polls.add(parked)  # wakeable from here on
                await departure(receive)
            return DEPARTED
        except TimeoutError:
            return parked.reason
        finally:
            polls.discard(parked)
            if not polls and self._parked.get(agent_id) is polls:
                del self._parked[agent_id]

    def wake(self, agent_id: str) -> None:
        now = None
        for parked in self._parked.get(agent_id, ()):
            # An expiring timeout keeps its reason: that poll is ending anyway, and its
            # agent polls again at once.
            if parked.timeout is not None and not parked.timeout.expired():
                parked.reason = WOKEN
                now = now if now is not None else asyncio.get_running_loop().time()
                parked.timeout.reschedule(now)

    def parked_agents(self) -> list[str]:
        return list(self._parked)

    def held(self) -> int:
        """Polls parked in this process right now."""
        return sum(len(polls) for polls in self._parked.values())

    # --- leases coming due -------------------------------------------------------------------

    def lease_due_in(self, agent_id: str, seconds: float) -> None:
        """A lease of this agent's comes due in `seconds`: wake its parked polls then.
        One entry per agent (its earliest), so the heap stays as small as the set of agents
        with leases out; later leases of a woken agent are found by the look-ahead sweep."""
        loop = asyncio.get_running_loop()
        due = loop.time() + max(0.0, seconds) + LEASE_SLACK_S
        if self._next_due.get(agent_id, float("inf")) <= due:
            return
        self._next_due[agent_id] = due
        heapq.heappush(self._leases, (due, agent_id))
        if self._leases[0] == (due, agent_id):
            self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._lease_timer is not None:
            self._lease_timer.cancel()
        self._lease_timer = loop.call_at(self._leases[0][0], self._leases_due) if self._leases else None

    def _leases_due(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._leases and self._leases[0][0] <= now:
            due, agent_id = heapq.heappop(self._leases)
            if self._next_due.get(agent_id) == due:
                del self._next_due[agent_id]
                self.wake(agent_id)
        self._arm(loop)

