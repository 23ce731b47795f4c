"""What dispatch's handlers reach, typed: one object per app (`app.state.service`), built by
create_app(), instead of loose attributes on Starlette's `app.state`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from prometheus_client import Counter
from starlette.requests import Request

from fleetline.settings import Settings
from services.common.db import Db
from services.common.periodic import Periodic
from services.common.ratelimit import RateLimit
from services.common.tokens import AccessTokenVerifier
from services.dispatch.agents.first_use import FirstUse
from services.dispatch.agents.last_seen import LastSeen
from services.dispatch.agents.long_poll import LongPolls
from services.dispatch.lifecycle.approval_policy import PolicyCache
from services.dispatch.lifecycle.materialiser import Materialiser
from services.dispatch.output.followers import Followers
from services.dispatch.signing.signer import CommandSigner


@dataclass(eq=False)
class Dispatch:
    settings: Settings
    db: Db
    verifier: AccessTokenVerifier  # agents' access tokens
    checkin_limit: RateLimit       # polls, per agent
    report_limit: RateLimit        # acks, results and output chunks, per agent
    download_limit: RateLimit      # release downloads, per client address
    webhook_sender: Periodic       # kicked when a delivery is retried by hand
    signer: CommandSigner
    polls: LongPolls
    followers: Followers
    materialiser: Materialiser
    last_seen: LastSeen
    first_use: FirstUse
    approval_policy: PolicyCache
    output_reads: Counter


def of(request: Request) -> Dispatch:
    return cast(Dispatch, request.app.state.service)
