"""A transaction sends one wake-up notification naming every agent it wakes (split only
where PostgreSQL's 8,000-byte payload limit requires): a 450-target job is three
notifications, not 450; a window's release is one."""

from __future__ import annotations

import psycopg

from services.dispatch.lifecycle import commands, jobs
from services.dispatch.wakeups.channels import AGENT_CHANNEL, WAKE_BATCH, woken_agents
from tests.db import rows
from tests.db.test_job_operations import OK, _job


def _heard(database_url: str):
    conn = psycopg.connect(database_url, autocommit=True)
    conn.execute(f"LISTEN {AGENT_CHANNEL}")

    def payloads() -> list[str]:
        return [n.payload for n in conn.notifies(timeout=1.0)]

    return conn, payloads


async def test_a_job_wakes_all_its_agents_in_one_notification_per_batch(db, sql, signer, database_url):
    agents = [rows.agent(sql) for _ in range(450)]
    conn, payloads = _heard(database_url)
    try:
        await _job(db, signer, agents)
        heard = payloads()
    finally:
        conn.close()
    assert sorted(len(woken_agents(p)) for p in heard) == [50, WAKE_BATCH, WAKE_BATCH]
    assert all(len(p.encode()) < 8000 for p in heard)
    assert sorted(a for p in heard for a in woken_agents(p)) == sorted(str(a) for a in agents)


async def test_a_windows_release_is_one_notification(db, sql, signer, policy, database_url):
    agents = [rows.agent(sql) for _ in range(6)]
    job = await _job(db, signer, agents, max_in_flight=3)
    claimed = [a for a in agents if (await commands.claim(db, a, 1, policy)).commands]
    conn, payloads = _heard(database_url)
    try:
        for agent in claimed:
            cid = sql.execute("SELECT id FROM commands WHERE job_id = %s AND agent_id = %s",
                              (job["id"], agent)).fetchone()[0]
            await commands.report(db, agent, cid, "succeeded", OK)
        await jobs.advance(db, job["id"])  # the three ends release the three waiting, at once
        heard = payloads()
    finally:
        conn.close()
    waiting = sorted(str(a) for a in agents if a not in claimed)
    assert [sorted(woken_agents(p)) for p in heard] == [waiting]
