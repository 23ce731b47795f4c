"""Parking: requests that wait, at no cost, for something to happen to a key (an agent's
held poll for its agent id, an output follower for its command id), woken by the LISTEN
connection (listener.py) or by a timer. The shape of Elastic Fleet Server's dispatcher and
River's notifier: a waiting request costs a parked task, never a loop of queries.

A request takes a ticket *before* it looks (claims, reads), and waits on that ticket after:
a wake-up that comes while it looks is kept on the ticket, so nothing committed meanwhile
is missed. Waiting, the request is its own task awaiting its client's disconnect under an
asyncio timeout, and a wake-up is that timeout brought forward to now: no second task,
future or callback per waiting request (they were a fifth of what a held poll cost).

What ends a wait: a wake-up (WOKEN), its deadline (DEADLINE), a re-check timer while
LISTEN is down (WOKEN), or its client leaving (DEPARTED)."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Callable, Iterator

from fleetline.http import departure

WOKEN, DEADLINE, DEPARTED = "woken", "deadline", "departed"


class Ticket:
    """One request's place in the car park: a wake-up kept until it waits, or the timeout it
    waits under and what that timeout's end means."""

    __slots__ = ("parking", "timeout", "reason", "kept")

    def __init__(self, parking: "Parking"):
        self.parking = parking
        self.timeout: asyncio.Timeout | None = None
        self.reason = DEADLINE
        self.kept = False  # woken while not waiting: the next wait returns at once

    async def wait(self, deadline: float, receive: Callable, recheck_s: float | None = None) -> str:
        """Until woken, `deadline` (loop time), the re-check interval, or the client leaving."""
        if self.kept:
            self.kept = False
            return WOKEN
        loop = asyncio.get_running_loop()
        wake_at, self.reason = deadline, DEADLINE
        if recheck_s is not None and loop.time() + recheck_s < deadline:
            wake_at, self.reason = loop.time() + recheck_s, WOKEN
        self.parking.waiting += 1
        try:
            async with asyncio.timeout_at(wake_at) as self.timeout:
                await departure(receive)
            return DEPARTED
        except TimeoutError:
            return self.reason
        finally:
            self.timeout = None
            self.parking.waiting -= 1


class Parking:
    def __init__(self) -> None:
        self._tickets: dict[str, set[Ticket]] = {}
        self.waiting = 0  # tickets waiting right now (the held-polls and followers gauges)

    @contextmanager
    def ticket(self, key: str) -> Iterator[Ticket]:
        """A place for one request under `key`, from now until the block ends."""
        ticket = Ticket(self)
        tickets = self._tickets.setdefault(key, set())
        tickets.add(ticket)
        try:
            yield ticket
        finally:
            tickets.discard(ticket)
            if not tickets and self._tickets.get(key) is tickets:
                del self._tickets[key]

    async def park(self, key: str, deadline: float, receive: Callable, recheck_s: float | None = None) -> str:
        """Take a ticket and wait on it at once (for a caller with nothing to look at first)."""
        with self.ticket(key) as ticket:
            return await ticket.wait(deadline, receive, recheck_s)

    def wake(self, key: str) -> None:
        now = None
        for ticket in self._tickets.get(key, ()):
            if ticket.timeout is None:
                ticket.kept = True  # looking right now: it waits no more once it is done
            elif not ticket.timeout.expired():
                # An expiring timeout keeps its reason: that request is ending anyway.
                ticket.reason = WOKEN
                now = now if now is not None else asyncio.get_running_loop().time()
                ticket.timeout.reschedule(now)

    def wake_all(self) -> None:
        """Everyone (after LISTEN was lost: anything may have happened meanwhile)."""
        for key in list(self._tickets):
            self.wake(key)

    def keys(self) -> list[str]:
        """The keys with a request here (waiting, or looking before it waits)."""
        return list(self._tickets)

    def held(self) -> int:
        """Requests waiting here right now."""
        return self.waiting
