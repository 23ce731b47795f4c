"""The schedules' ticker: a small background service in every dispatch process.

Every FLEETLINE_SCHEDULE_TICK_S (1 s) it looks for due schedules (schedules_due: one index
probe when none is) and ticks each (schedules.tick_one: one transaction per schedule,
SKIP LOCKED, so replicas share the work and never tick one schedule twice). A job a tick
starts that is too large to make in one transaction is handed to the materialiser.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import Counter

from fleetline.ethos import Log
from services.common.db import Db
from services.common.periodic import Periodic
from services.dispatch.lifecycle import schedules
from services.dispatch.signing.signer import CommandSigner

_log = Log("dispatch", "ticker")


class Ticker(Periodic):
    def __init__(self, db: Db, signer: CommandSigner, interval_s: float, runs: Counter,
                 started: Callable[[], None] = lambda: None):
        self.db, self.signer, self.runs, self.started = db, signer, runs, started
        super().__init__("ticker", interval_s, self._tick)

    async def _tick(self) -> None:
        counted = await schedules.tick(self.db, self.signer)
        for outcome, n in counted.items():
            if n:
                self.runs.labels(outcome).inc(n)
        if counted["started"]:
            self.started()
        if any(counted.values()):
            _log.info("ticked", **{k: v for k, v in counted.items() if v})
