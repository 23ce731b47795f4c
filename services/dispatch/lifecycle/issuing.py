"""What issuing commands takes, written once for a single command, a job, an approval and a
large job's slices: how many approvals the policy asks for, and the signed payload each
command carries (made for its own id and agent, from the request's settings)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Protocol

from services.common.db import Db
from services.dispatch.lifecycle import approval_policy
from services.dispatch.lifecycle import queries as q
from services.dispatch.lifecycle.approval_policy import Policy
from services.dispatch.releases import rules
from services.dispatch.signing.signer import CommandSigner

SIGN_SLICE = 500  # signatures between two yields to the event loop


class Settings(Protocol):
    """What a command's signature covers of the request (commands.NewCommand has it)."""
    @property
    def type(self) -> str: ...
    @property
    def params(self) -> dict: ...
    @property
    def run_timeout_s(self) -> int: ...


async def approvals_needed(db: Db, policy: Policy, command_type: str, agents: list[uuid.UUID],
                           all_active: bool = False) -> int:
    """How many approvals the policy asks for a request of `command_type` to `agents`
    (0: none). Its label rules are answered by the database for the targets at hand."""
    if not policy.rules:
        return 0
    label_rules = policy.label_rules()
    carried = await db.fetchval(q.LABEL_RULES_CARRIED, agents, label_rules) if label_rules else []
    request = approval_policy.Request(command_type, len(agents), all_active=all_active, carried=carried)
    return policy.approvals if approval_policy.needs_approval(policy, request) else 0


async def signed_payloads(db: Db, signer: CommandSigner, command_ids: list[uuid.UUID], agents: list[uuid.UUID],
                          settings: Settings, issued_at: datetime, expires_at: datetime, issued_by: str,
                          approved_by: list[str] | None = None) -> list[dict]:
    """One signed payload per command, each for its own id and agent, yielding to the event
    loop every SIGN_SLICE: ~60 us a signature, so 10,000 would hold it (held polls, acks)
    for over half a second in one piece. An upgrade's payload carries the digest and size
    of the release for its agent's platform, read now (releases/rules.py)."""
    params_of = await _upgrade_params(db, settings.params, agents) if settings.type == rules.UPGRADE else {}
    signed = []
    for n, (command_id, agent_id) in enumerate(zip(command_ids, agents, strict=True), 1):
        signed.append(signer.sign(command_id=str(command_id), agent_id=str(agent_id), type=settings.type,
                                  params=params_of.get(agent_id, settings.params), issued_at=issued_at,
                                  expires_at=expires_at,
                                  run_timeout_s=settings.run_timeout_s, issued_by=issued_by,
                                  approved_by=approved_by))
        if n % SIGN_SLICE == 0:
            await asyncio.sleep(0)
    return signed


async def _upgrade_params(db: Db, params: dict, agents: list[uuid.UUID]) -> dict[uuid.UUID, dict]:
    rows = await db.fetch(q.UPGRADE_RELEASES, agents, params.get("version"))
    return {r["id"]: rules.signed_params(params, r["sha256"], r["size"]) for r in rows}
