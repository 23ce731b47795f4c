"""Readers following a command's output, parked (services/dispatch/wakeups/parking.py) by
command id like held polls by agent id: a reader takes its ticket, reads, and, with nothing
new, waits on the ticket without a statement until the LISTEN connection hears the stream
grow or the command end (`fleetline_output`, with the command id), its deadline passes, or
its client leaves. The ticket is taken before the read, so a chunk committed while it
reads still wakes it."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from services.dispatch.lifecycle.commands import CommandError
from services.dispatch.output.chunks import Page
from services.dispatch.wakeups.parking import DEPARTED, Parking

# Held reads one operator may have parked in one process at once (a console tab follows one
# command; a script following a job's every target, a few). Past it, `429`: a viewer cannot
# fill a dispatch's (and a gateway's) memory with thousands of parked reads.
HELD_PER_OPERATOR = 20
HELD_RETRY_AFTER_S = 5


class TooManyHeld(CommandError):
    """The operator already holds HELD_PER_OPERATOR reads here."""


class Followers(Parking):
    def __init__(self, per_holder: int = HELD_PER_OPERATOR) -> None:
        super().__init__()
        self.per_holder = per_holder
        self._holding: dict[str, int] = {}  # holder (an operator's id) -> its reads that may wait

    async def follow(self, command_id: str, wait_s: float, receive: Callable,
                     read_page: Callable[[], Awaitable[Page]], holder: str = "") -> Page | None:
        """Read; while nothing is new and the command runs, wait until woken, then read
        again, until `wait_s` passes. None when the client left. A `holder` holds at most
        `per_holder` reads that may wait at once (TooManyHeld)."""
        if wait_s <= 0:
            return await read_page()
        if self._holding.get(holder, 0) >= self.per_holder:
            raise TooManyHeld()
        self._holding[holder] = self._holding.get(holder, 0) + 1
        try:
            return await self._follow(command_id, wait_s, receive, read_page)
        finally:
            left = self._holding.pop(holder) - 1
            if left:
                self._holding[holder] = left

    async def _follow(self, command_id: str, wait_s: float, receive: Callable,
                      read_page: Callable[[], Awaitable[Page]]) -> Page | None:
        deadline = asyncio.get_running_loop().time() + wait_s
        with self.ticket(command_id) as ticket:
            while True:
                page = await read_page()
                if page.data or page.complete or asyncio.get_running_loop().time() >= deadline:
                    return page
                if await ticket.wait(deadline, receive) == DEPARTED:
                    return None
