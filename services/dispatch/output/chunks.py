"""A running command's live output: the agent's chunks placed in its stream (rules.py
decides where), and pages of it read from any offset (followers.py holds readers who wait
for more)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fleetline import statuses
from services.common.db import Db
from services.common.operators import EVERYTHING, Scope
from services.dispatch.lifecycle import commands
from services.dispatch.lifecycle.commands import CommandError, CommandNotFound
from services.dispatch.output import queries as q
from services.dispatch.output import rules

PAGE_BYTES = 1024 * 1024  # the most one read answers; `next_offset` says where to go on


class NotRunning(CommandError):
    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


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
