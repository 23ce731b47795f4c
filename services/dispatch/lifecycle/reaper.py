"""The reaper: a small background service in every dispatch process.

Every `FLEETLINE_REAPER_INTERVAL_S` it runs commands.reap(), whose four sweeps
(commands.REAPER_SWEEPS) move in batches:
  unacked leases with retries used up            -> timed_out
  running commands past run_timeout_s             -> timed_out
  pending|sent commands past expires_at           -> expired
  undelivered job commands of agents revoked lately -> cancelled (a missed notification)
then denies requests whose approval deadline passed (approvals.expire),
and then moves every running job on (jobs.advance_running: halts, completions and the
rollout window's releases that those ends, or ends elsewhere, made due).
Safe with many replicas running it at once: each row is picked FOR UPDATE SKIP LOCKED
and re-checked by the state guard of its UPDATE (lifecycle/queries.py).
"""

from __future__ import annotations

from fleetline.ethos import Log
from services.common.db import Db
from services.common.periodic import Periodic
from services.dispatch.lifecycle import approvals, commands, jobs

_log = Log("dispatch", "reaper")


class Reaper(Periodic):
    def __init__(self, db: Db, interval_s: float):
        self.db = db
        super().__init__("reaper", interval_s, self._reap)

    async def _reap(self) -> None:
        moved = await commands.reap(self.db)
        if any(moved.values()):
            _log.info("reaped", **moved)
        expired = await approvals.expire(self.db)
        if any(expired.values()):
            _log.info("approvals_expired", **expired)
        advanced = await jobs.advance_running(self.db)
        if any(advanced.values()):
            _log.info("jobs_advanced", **advanced)
