"""The reaper: a small background service in every dispatch process.

Every `FLEETLINE_REAPER_INTERVAL_S` it moves, in batches:
  unacked leases with retries used up -> timed_out
  running commands past run_timeout_s  -> timed_out
  pending|sent commands past expires_at -> expired
Safe with many replicas running it at once: each row is picked FOR UPDATE SKIP LOCKED
and re-checked by the state guard of its UPDATE (queries.py).
"""

from __future__ import annotations

from services.common.db import Db
from services.common.ethos import Log
from services.dispatch import queries as q
from services.dispatch.periodic import Periodic

_log = Log("dispatch", "reaper")

BATCH = 1000
SWEEPS = (
    ("exhausted_leases", q.REAP_EXHAUSTED_LEASES),
    ("overdue_runs", q.REAP_OVERDUE_RUNS),
    ("expired", q.REAP_EXPIRED),
)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # "UPDATE 17" -> 17


async def reap_once(db: Db, batch: int = BATCH) -> dict[str, int]:
    """One full pass; each sweep repeats while it fills whole batches."""
    moved = {}
    for name, sql in SWEEPS:
        total = 0
        while True:
            n = _count(await db.execute(sql, batch))
            total += n
            if n < batch:
                break
        moved[name] = total
    return moved


class Reaper(Periodic):
    def __init__(self, db: Db, interval_s: float):
        self.db = db
        super().__init__("reaper", interval_s, self._reap)

    async def _reap(self) -> None:
        moved = await reap_once(self.db)
        if any(moved.values()):
            _log.info("reaped", **moved)
