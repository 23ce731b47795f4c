"""The materialiser: a large job's frozen targets (job_targets) become signed commands a
slice at a time, in the background, in every dispatch process.

One slice is one transaction: the oldest running job with targets left is locked (SKIP
LOCKED: another replica's job is left to it, so two never make the same slice), the next
`slice_size` targets are taken off its queue with their agents' status, each active one
gets its signed command (waiting behind the job's window, or pending), a target revoked
since the job froze it gets a cancelled one (the counts add up), and the job's
`materialised` moves on; then jobs.advance releases the window. A crash loses nothing and
repeats nothing: an uncommitted slice is still queued, a committed one is gone from the
queue. A cancel or a halt takes the same job lock, drops what is queued, and ends the job:
the next slice finds no running job to make.

Runs every `interval_s`, and at once when this process created a large job (`kick`)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from fleetline.ethos import Log
from services.common.db import Db
from services.common.periodic import Periodic
from services.dispatch.lifecycle import issuing, jobs, rollout
from services.dispatch.lifecycle import queries as q
from services.dispatch.lifecycle.commands import NewCommand
from services.dispatch.signing.signer import CommandSigner

_log = Log("dispatch", "materialiser")


class Materialiser(Periodic):
    def __init__(self, db: Db, signer: CommandSigner, interval_s: float = 1.0,
                 slice_size: int = jobs.IN_REQUEST_TARGETS):
        self.db, self.signer, self.slice_size = db, signer, slice_size
        super().__init__("materialiser", interval_s, self.drain)

    async def drain(self) -> int:
        """Slices until no running job has targets left; how many commands were made."""
        made = 0
        while (n := await self.make_slice()) is not None:
            made += n
        return made

    async def make_slice(self) -> int | None:
        """One slice of one job; the commands made, or None when there is nothing to do."""
        async with self.db.transaction():
            job = await self.db.fetchrow(q.LOCK_MATERIALISING_JOB)
            if job is None:
                return None
            taken = await self.db.fetch(q.TAKE_JOB_TARGETS, job["id"], self.slice_size)
            if not taken:  # counted but not queued: a bug, said once a step, never a spin
                _log.error("job_targets_missing", job_id=job["id"], materialised=job["materialised"],
                           target_count=job["target_count"])
                return None
            agents = [r["agent_id"] for r in taken]
            revoked = [r["agent_id"] for r in taken if r["status"] != "active"]
            settings = NewCommand(agent_id=None, idempotency_key=None, **job["command"])
            now = datetime.now(timezone.utc)
            expires_at = now + timedelta(seconds=settings.ttl_s)
            ids = [uuid.uuid4() for _ in agents]
            signed = await issuing.signed_payloads(self.db, self.signer, ids, agents, settings, now, expires_at,
                                                   job["created_by_name"],
                                                   [a["operator"]["name"] for a in job["approvals"]])
            # With a window, advance() below releases what it allows.
            due = rollout.due_at_start(job["max_in_flight"], jobs.canary_of(job), len(agents), whole=False)
            await jobs.insert_commands(self.db, job["id"], settings, ids, agents, signed, now, expires_at, due,
                                       job["created_by_id"], job["created_by_name"], "pending")
            if revoked:
                await self.db.execute(q.CANCEL_REVOKED_TARGETS, job["id"], revoked)
            await self.db.execute(q.MATERIALISED, job["id"], len(agents))
            if due:
                gone = set(revoked)
                await self.db.execute(q.NOTIFY_AGENTS, [a for a in agents if a not in gone])
        await jobs.advance(self.db, job["id"])
        _log.debug("slice_made", job_id=job["id"], commands=len(agents), revoked=len(revoked))
        return len(agents)
