"""A running command's live output: the agent's chunks placed in its stream (output_rules.py
decides where), and readers who follow it parked at no cost until it grows.

Readers follow like held polls (waiters.py): a reader registers, reads, and, with nothing
new, waits on its event without a statement until the LISTEN connection hears the stream
grow or the command end (`fleetline_output`, with the command id), its deadline passes, or
its client leaves. It registers before it reads, so a chunk committed while it reads still
wakes it."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Callable

from fleetline import statuses
from fleetline.http import departure
from services.common.db import Db
from services.common.operators import EVERYTHING, Scope
from services.dispatch.output import rules
from services.dispatch.output import queries as q
from services.dispatch.lifecycle import commands
from services.dispatch.lifecycle.commands import CommandError, CommandNotFound

PAGE_BYTES = 1024 * 1024  # the most one read answers; `next_offset` says where to go on
# Held reads one operator may have parked in one process at once (a console tab follows one
# command; a script following a job's every target, a few). Past it, `429`: a viewer cannot
# fill a dispatch's (and a gateway's) memory with thousands of parked reads.
HELD_PER_OPERATOR = 20
HELD_RETRY_AFTER_S = 5


class NotRunning(CommandError):
    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


class TooManyHeld(CommandError):
    """The operator already holds HELD_PER_OPERATOR reads here."""


class OffsetConflict(CommandError):
    def __init__(self, expected: int):
        super().__init__(expected)
        self.expected = expected


async def append(db: Db, agent_id: uuid.UUID, command_id: uuid.UUID, offset: int, data: str,
                 cap: int) -> dict:
    """Place one chunk; returns the stream's end and whether it is cut. Replaying a chunk
    changes nothing; a gap or a disagreeing overlap raises OffsetConflict."""
    raw = data.encode("utf-8")
    async with db.transaction():
        row = await db.fetchrow(q.LOCK_FOR_OUTPUT, command_id, agent_id)
        commands.check_agent(row["agent_status"] if row is not None else None)
        if row["status"] is None:
            raise CommandNotFound()
        if row["status"] != "running":
            raise NotRunning(row["status"])
        stored = row["output_bytes"]
        overlap = b""
        if offset < stored and raw:
            end = min(stored, offset + len(raw))
            overlap = rules.assemble(await db.fetch(q.OUTPUT_CHUNKS, command_id, offset, end), offset, end)
        placed = rules.place(stored, row["output_truncated"], offset, raw, overlap, cap)
        if placed.kind == rules.CONFLICT:
            raise OffsetConflict(stored)
        if placed.data:
            await db.execute(q.APPEND_OUTPUT, command_id, placed.at, placed.data.decode("utf-8"), placed.truncated)
            stored = placed.at + len(placed.data)
        elif placed.truncated and not row["output_truncated"]:
            await db.execute(q.MARK_OUTPUT_TRUNCATED, command_id)
    return {"next_offset": stored, "truncated": placed.truncated}


@dataclass(frozen=True)
class Page:
    offset: int
    data: str
    next_offset: int
    truncated: bool
    complete: bool

    def view(self) -> dict:
        return {"offset": self.offset, "data": self.data, "next_offset": self.next_offset,
                "truncated": self.truncated, "complete": self.complete}


async def read(db: Db, command_id: uuid.UUID, offset: int, scope: Scope = EVERYTHING) -> Page:
    """The stream from `offset` (at most PAGE_BYTES). A command that streamed nothing and
    has ended reads as its result's output (an older agent, or a type that prints at once)."""
    row = await commands.get(db, command_id, scope)
    complete = row["status"] in statuses.COMMAND_FINAL
    stored = row["output_bytes"]
    if stored == 0 and complete:
        whole = ((row["result"] or {}).get("output") or "").encode("utf-8")
        stored, chunks = len(whole), [(0, whole.decode("utf-8"))] if whole else []
    else:
        chunks = None
    start = min(offset, stored)
    end = min(stored, start + PAGE_BYTES)
    if chunks is None:
        chunks = await db.fetch(q.OUTPUT_CHUNKS, command_id, start, end) if end > start else []
    raw = rules.assemble([(c[0], c[1]) for c in chunks], start, end)
    skip = rules.readable_from(raw)
    text = raw[skip:].decode("utf-8", errors="ignore")  # never half a character at the end
    next_offset = start + skip + len(text.encode("utf-8"))
    return Page(start + skip, text, next_offset, row["output_truncated"], complete and next_offset >= stored)


class Followers:
    """Readers parked on a command's output, woken by the listener."""

    def __init__(self, per_holder: int = HELD_PER_OPERATOR) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        self.per_holder = per_holder
        self._holding: dict[str, int] = {}  # holder (an operator's id) -> its reads held

    def wake(self, command_id: str) -> None:
        for event in self._events.get(command_id, ()):
            event.set()

    def wake_all(self) -> None:  # after LISTEN was lost: anything may have happened
        for events in self._events.values():
            for event in events:
                event.set()

    def held(self) -> int:
        return sum(len(e) for e in self._events.values())

    async def follow(self, command_id: str, wait_s: float, receive: Callable,
                     read_page: Callable, holder: str = "") -> Page | None:
        """Read; while nothing is new and the command runs, park until woken, then read
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
                      read_page: Callable) -> Page | None:
        event = asyncio.Event()
        events = self._events.setdefault(command_id, set())
        events.add(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        gone = asyncio.ensure_future(departure(receive))
        try:
            while True:
                event.clear()  # before the read: a wake-up during it is kept
                page = await read_page()
                left = deadline - loop.time()
                if page.data or page.complete or left <= 0:
                    return page
                woken = asyncio.ensure_future(event.wait())
                done, _ = await asyncio.wait({woken, gone}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                if gone in done:
                    return None
        finally:
            gone.cancel()
            events.discard(event)
            if not events and self._events.get(command_id) is events:
                del self._events[command_id]
