"""The look-ahead sweep: every SWEEP_S, one statement finds the leases (of any replica)
coming due soon, and the polls parked here for those agents are told when to wake for
their redelivery. Leases this process handed out itself are already in the waiters'
heap; this covers the rest (another replica's claim, a later lease of a woken agent)."""

from __future__ import annotations

from services.common.db import Db
from services.common.periodic import Periodic
from services.dispatch.wakeups import queries as q
from services.dispatch.wakeups.waiters import Waiters

SWEEP_S = 2.0
LOOK_AHEAD_S = 2.5  # a little more than the interval, so no lease falls between sweeps


class LeaseSweep(Periodic):
    def __init__(self, db: Db, waiters: Waiters):
        self.db, self.waiters = db, waiters
        self.statements = 0
        super().__init__("lease_sweep", SWEEP_S, self._sweep)

    async def _sweep(self) -> None:
        parked = set(self.waiters.keys())
        if not parked:
            return  # nobody to wake: no statement at all
        self.statements += 1
        for row in await self.db.fetch(q.LEASES_COMING_DUE, LOOK_AHEAD_S):
            if row["agent_id"] in parked:
                self.waiters.lease_due_in(row["agent_id"], row["due_in_s"])
