"""Enrolment's operations in-process: registration (a retry only while the credentials were
never used), renewal (rotation, the grace, reuse), revocation (and the notification that
tells dispatch)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
import pytest

from fleetline.settings import postgres_url
from services.auth import enrolment
from services.common.audit import Actor, Context
from services.common.db import REVOKED_CHANNEL
from services.dispatch.agents.first_use import FirstUse
from tests.db.test_command_operations import CTX

TTL = 3600
ORIGIN = Context(Actor("agent", None, ""), "test-request", "127.0.0.1")


def _token(sql, max_uses: int = 1) -> str:
    secret = f"flreg_{uuid.uuid4().hex}"
    sql.execute("INSERT INTO registration_tokens (id, token_hash, max_uses, expires_at) "
                "VALUES (gen_random_uuid(), %s, %s, now() + interval '1 day')",
                (hashlib.sha256(secret.encode()).digest(), max_uses))
    return secret


def _reg(token: str, machine: str = "m-1") -> enrolment.Registration:
    return enrolment.Registration(token=token, machine_id=machine, hostname="h")


async def test_a_repeat_registration_is_a_retry_until_the_credentials_are_used(db, sql):
    token = _token(sql)
    first, retry = await enrolment.register(db, _reg(token), TTL, ORIGIN)
    again, retry = await enrolment.register(db, _reg(token), TTL, ORIGIN)
    assert retry and again.agent_id == first.agent_id
    assert sql.execute("SELECT uses FROM registration_tokens").fetchone() == (1,)
    await FirstUse(db).mark(str(first.agent_id))  # its first poll
    with pytest.raises(enrolment.MachineEnrolled) as refused:
        await enrolment.register(db, _reg(token), TTL, ORIGIN)
    assert refused.value.agent_id == first.agent_id and refused.value.reason == enrolment.CREDENTIALS_USED
    with pytest.raises(enrolment.MachineEnrolled) as other:
        await enrolment.register(db, _reg(_token(sql, 5)), TTL, ORIGIN)
    assert other.value.reason == enrolment.OTHER_TOKEN
    assert sql.execute("SELECT count(*) FROM agents").fetchone() == (1,)


async def test_a_renewal_counts_as_a_use(db, sql):
    token = _token(sql)
    creds, _ = await enrolment.register(db, _reg(token), TTL, ORIGIN)
    await enrolment.renew(db, creds.agent_id, creds.refresh_token, "m-1", TTL, ORIGIN)
    with pytest.raises(enrolment.MachineEnrolled):
        await enrolment.register(db, _reg(token), TTL, ORIGIN)


async def test_a_grace_retired_successor_is_a_reuse_and_the_family_dies(db, sql):
    creds, _ = await enrolment.register(db, _reg(_token(sql)), TTL, ORIGIN)
    r2, grace = await enrolment.renew(db, creds.agent_id, creds.refresh_token, "m-1", TTL, ORIGIN)
    assert not grace
    r3, grace = await enrolment.renew(db, creds.agent_id, creds.refresh_token, "m-1", TTL, ORIGIN)  # lost answer
    assert grace
    with pytest.raises(enrolment.TokenReused):
        await enrolment.renew(db, creds.agent_id, r2.refresh_token, "m-1", TTL, ORIGIN)
    with pytest.raises(enrolment.TokenReused):  # committed: the family stays dead
        await enrolment.renew(db, creds.agent_id, r3.refresh_token, "m-1", TTL, ORIGIN)
    assert sql.execute("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL").fetchone() == (0,)


async def test_racing_renewals_of_one_token_leave_one_live_token(db, sql):
    creds, _ = await enrolment.register(db, _reg(_token(sql)), TTL, ORIGIN)
    outcomes = await asyncio.gather(*(enrolment.renew(db, creds.agent_id, creds.refresh_token, "m-1", TTL, ORIGIN)
                                      for _ in range(8)), return_exceptions=True)
    assert all(not isinstance(o, Exception) for o in outcomes), outcomes
    assert sql.execute("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL AND consumed_at IS NULL"
                       ).fetchone() == (1,)


async def test_revocation_ends_the_tokens_and_tells_dispatch(db, sql, databases, database_url):
    creds, _ = await enrolment.register(db, _reg(_token(sql)), TTL, ORIGIN)
    listener = await asyncpg.connect(postgres_url(databases.service_url(database_url)))
    heard: asyncio.Queue = asyncio.Queue()
    await listener.add_listener(REVOKED_CHANNEL, lambda *args: heard.put_nowait(args[-1]))
    try:
        await enrolment.revoke(db, CTX, creds.agent_id)
        assert await asyncio.wait_for(heard.get(), 5) == str(creds.agent_id)
        await enrolment.revoke(db, CTX, creds.agent_id)  # again: no change
    finally:
        await listener.close()
    assert sql.execute("SELECT status FROM agents").fetchone() == ("revoked",)
    with pytest.raises(enrolment.AgentRevoked):
        await enrolment.renew(db, creds.agent_id, creds.refresh_token, "m-1", TTL, ORIGIN)
    with pytest.raises(enrolment.NoSuchAgent):
        await enrolment.revoke(db, CTX, uuid.uuid4())


async def test_first_uses_seen_together_are_written_together_and_each_before_its_answer(db, sql):
    """A mass enrolment's first polls: one statement for all the agents seen while a write
    was under way, not one commit each; and no mark answered before it is in the database."""
    token = _token(sql, 300)
    agents = [(await enrolment.register(db, _reg(token, f"m-{i}"), TTL, ORIGIN))[0].agent_id for i in range(300)]
    first_use = FirstUse(db)

    async def first_poll(agent_id: uuid.UUID) -> int:
        await first_use.mark(str(agent_id))
        # Answered only now: the mark is committed (another connection sees it).
        used = await db.fetchval("SELECT credentials_used_at IS NOT NULL FROM agents WHERE id = $1", agent_id)
        assert used
        return 1

    assert sum(await asyncio.gather(*(first_poll(a) for a in agents))) == 300
    assert first_use.writes <= 3, first_use.writes
    assert sql.execute("SELECT count(*) FROM agents WHERE credentials_used_at IS NULL").fetchone() == (0,)
    for agent_id in agents[:5]:  # and every one of them is enrolled for good
        with pytest.raises(enrolment.MachineEnrolled):
            await enrolment.register(db, _reg(token, f"m-{agents.index(agent_id)}"), TTL, ORIGIN)
    writes = first_use.writes
    await asyncio.gather(*(first_use.mark(str(a)) for a in agents))  # known: nothing written
    assert first_use.writes == writes


async def test_a_first_use_racing_a_repeat_registration_either_comes_first_or_finds_the_new_credentials(db, sql):
    """The guarantee batching must keep: after a request is answered, the machine cannot be
    registered again; a registration answered first is a retry the mark then follows."""
    token = _token(sql, 50)
    first_use = FirstUse(db)
    for i in range(20):
        creds, _ = await enrolment.register(db, _reg(token, f"race-{i}"), TTL, ORIGIN)
        outcomes = await asyncio.gather(first_use.mark(str(creds.agent_id)),
                                        enrolment.register(db, _reg(token, f"race-{i}"), TTL, ORIGIN),
                                        return_exceptions=True)
        registered = outcomes[1]
        if isinstance(registered, enrolment.MachineEnrolled):
            continue  # the mark came first: refused
        assert not isinstance(registered, Exception), registered
        assert registered[0].agent_id == creds.agent_id  # a retry, before the mark
        with pytest.raises(enrolment.MachineEnrolled):  # and after the mark, never again
            await enrolment.register(db, _reg(token, f"race-{i}"), TTL, ORIGIN)
    assert sql.execute("SELECT count(*) FROM agents").fetchone() == (20,)
