"""Held long polls, parked (parking.py) by agent id: a held poll takes its ticket, claims
once, and waits on the ticket, running no SQL, until something is due for its agent.

What wakes a parked poll:
- a command queued for its agent: the LISTEN connection (listener.py) calls `wake`;
- a lease coming due (a redelivery), with no event to say so: a min-heap of
  `(due, agent)` for the leases this process handed out, with one timer on its head, plus
  a look-ahead sweep every SWEEP_S for leases handed out by other replicas (lease_sweep.py);
- its deadline, or its client going away (then it claims nothing).
While LISTEN is down, parked polls also re-check every RECHECK_S.
"""

from __future__ import annotations

import asyncio
import heapq

from services.dispatch.wakeups.parking import DEADLINE, DEPARTED, WOKEN, Parking

__all__ = ["DEADLINE", "DEPARTED", "WOKEN", "RECHECK_S", "Waiters"]

RECHECK_S = 5.0  # only while the LISTEN connection is down
LEASE_SLACK_S = 0.05  # wake just after a lease's due time, so the database agrees it is due


class Waiters(Parking):
    def __init__(self) -> None:
        super().__init__()
        self._leases: list[tuple[float, str]] = []  # (loop time due, agent id), a min-heap
        self._next_due: dict[str, float] = {}  # each agent's earliest entry in the heap
        self._lease_timer: asyncio.TimerHandle | None = None

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

