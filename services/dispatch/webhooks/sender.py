"""The sender: claims due deliveries (SKIP LOCKED: replicas share the work), sends each as
a Standard Webhooks request (signed with the endpoint's secret, and its previous one while
that is valid), and records what the receiver said; rules.py decides what that means. No
redirects are followed; the receiver's address is the one addresses.py vetted."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import Callable

import httpx

from fleetline.ethos import Log
from services.common.db import Db
from services.dispatch.webhooks import queries as q
from services.dispatch.webhooks import rules
from services.dispatch.webhooks.addresses import NotAllowed, resolve

_log = Log("dispatch", "webhooks")
BATCH = 64         # deliveries claimed at once
PARALLEL = 16      # sent at once
LEASE_S = rules.TIMEOUT_S + 5  # a claimed delivery is due again after this, if its sender died


class Sender:
    def __init__(self, db: Db, allow_private: bool, retry_scale: float,
                 counted: Callable[[str], None] = lambda outcome: None):
        self.db, self.allow_private, self.retry_scale, self.counted = db, allow_private, retry_scale, counted
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=rules.TIMEOUT_S, trust_env=False,
                                      limits=httpx.Limits(max_connections=PARALLEL))
        self._slots = asyncio.Semaphore(PARALLEL)

    async def step(self) -> int:
        """One pass: every due delivery, batch after batch. How many were attempted."""
        attempted = 0
        while True:
            claimed = await self.db.fetch(q.CLAIM_DUE, BATCH, LEASE_S)
            if not claimed:
                return attempted
            await asyncio.gather(*(self._attempt(row) for row in claimed))
            attempted += len(claimed)

    async def oldest_due_s(self) -> float:
        return float(await self.db.fetchval(q.OLDEST_DUE_S))

    async def close(self) -> None:
        await self.http.aclose()

    async def _attempt(self, row) -> None:
        if row["enabled"]:
            async with self._slots:
                status_code, error, took = await self._send(row)
            after = rules.after_attempt(row["attempts"], status_code, self.retry_scale)
        else:  # disabled after it was made (a 410, an admin): never sent
            status_code, error, took = None, "the endpoint is disabled", None
            after = rules.Next("failed")
        await self.db.execute(q.RECORD_ATTEMPT, row["id"], row["attempts"], after.status, after.retry_in_s or 0,
                              status_code, took, error)
        if after.disable_endpoint:
            await self.db.execute(q.DISABLE_ENDPOINT, row["endpoint_id"], "the receiver answered 410 Gone")
            _log.warning("endpoint_disabled", endpoint_id=row["endpoint_id"], reason="410")
        outcome = "retry" if after.status == "pending" else after.status
        self.counted(outcome)
        log = _log.info if after.status == "delivered" else _log.warning
        log("delivery_attempted", delivery_id=row["id"], endpoint_id=row["endpoint_id"], attempt=row["attempts"],
            status_code=status_code, outcome=outcome, error=error, latency_ms=took)

    async def _send(self, row) -> tuple[int | None, str | None, int | None]:
        """(status code or None, error or None, milliseconds)."""
        body = json.dumps(row["body"], separators=(",", ":"), ensure_ascii=False).encode()
        msg_id = str(row["id"])
        now = datetime.now(timezone.utc)
        began = time.monotonic()
        try:
            target = await resolve(row["url"], self.allow_private)
            headers = {"content-type": "application/json", "host": target.host_header,
                       "user-agent": "Fleetline-Webhooks/1.3",
                       "webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
                       "webhook-signature": rules.signature(msg_id, now, body, row["secret"],
                                                            row["previous_secret"])}
            resp = await self.http.post(target.url, content=body, headers=headers,
                                        extensions={"sni_hostname": target.host})
            return resp.status_code, None if resp.status_code < 300 else f"HTTP {resp.status_code}", _ms(began)
        except NotAllowed as exc:
            return None, f"not sent: {exc}", _ms(began)
        except httpx.TimeoutException:
            return None, f"no answer within {rules.TIMEOUT_S:.0f} s", _ms(began)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500], _ms(began)


def _ms(began: float) -> int:
    return int((time.monotonic() - began) * 1000)
