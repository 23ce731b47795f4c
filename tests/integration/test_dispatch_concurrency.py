"""Races provoked with many real concurrent requests; assertions count rows in PostgreSQL."""

import asyncio
import random

import httpx
import pytest

from services.dispatch.lifecycle.commands import FINAL, TRANSITIONS
from tests.integration.support import wait_until

AUDIT = """
CREATE TABLE status_audit (command_id uuid, old text, new text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION audit_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status IS DISTINCT FROM NEW.status OR NEW.delivery_count <> OLD.delivery_count THEN
    INSERT INTO status_audit (command_id, old, new) VALUES (NEW.id, OLD.status, NEW.status);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER commands_audit AFTER UPDATE ON commands FOR EACH ROW EXECUTE FUNCTION audit_status();
"""


async def _queue_many(fleet, agent, n, **fields):
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=fleet.dispatch_url, headers=fleet.admin, timeout=60) as c:
        async def one():
            async with sem:
                r = await c.post("/api/v1/admin/commands", json={"agent_id": agent.agent_id,
                                                                 "type": "ping", **fields})
                assert r.status_code == 201, r.text
                return r.json()["id"]
        return await asyncio.gather(*(one() for _ in range(n)))


def test_concurrent_polls_never_deliver_a_command_twice(fleet, sql):
    agent = fleet.register()
    ids = asyncio.run(_queue_many(fleet, agent, 2000))
    received: list[str] = []

    async def poller(client, rng):
        empty = 0
        while empty < 2:
            r = await client.get(f"/api/v1/agents/{agent.agent_id}/commands",
                                 params={"limit": rng.randint(1, 100)})
            assert r.status_code == 200, r.text
            batch = r.json()["commands"]
            assert all(c["delivery"] == 1 for c in batch)
            received.extend(c["id"] for c in batch)
            empty = 0 if batch else empty + 1

    async def main():
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=fleet.dispatch_url, headers=agent.headers,
                                     limits=limits, timeout=60) as client:
            await asyncio.gather(*(poller(client, random.Random(i)) for i in range(32)))

    asyncio.run(main())
    assert len(received) == len(set(received)) == 2000
    assert set(received) == set(ids)
    assert fleet.poll(agent)["commands"] == []
    assert sql.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 2000
    assert sql.execute("SELECT count(*) FROM commands WHERE status = 'pending'").fetchone()[0] == 0
    per_command = sql.execute("SELECT max(n), min(n) FROM (SELECT count(*) n FROM deliveries "
                              "GROUP BY command_id) d").fetchone()
    assert per_command == (1, 1)


def test_unacked_commands_are_redelivered_until_retries_run_out(start_dispatch, auth, sql):
    from tests.integration.fleet import Fleet

    svc = start_dispatch(FLEETLINE_REAPER_INTERVAL_S="0.2")
    fleet = Fleet(auth.url, svc.url)
    agent = fleet.register()
    never_acked = [fleet.queue(agent, ack_timeout_s=1, max_retries=3)["id"] for _ in range(3)]
    acked_late = fleet.queue(agent, ack_timeout_s=1, max_retries=3)["id"]
    deliveries: dict[str, list[int]] = {}

    def poll_once():
        for c in fleet.poll(agent, limit=100)["commands"]:
            deliveries.setdefault(c["id"], []).append(c["delivery"])
            if c["id"] == acked_late and c["delivery"] == 2:
                assert fleet.ack(agent, acked_late).json()["status"] == "running"
        states = [fleet.command(i)["status"] for i in never_acked]
        return all(s == "timed_out" for s in states)

    wait_until(poll_once, timeout=30, interval=0.1, what="retries to run out")
    for _ in range(15):  # keep polling past another lease period: nothing more comes
        poll_once()
    for cid in never_acked:
        assert deliveries[cid] == [1, 2, 3, 4]
        state = fleet.command(cid)
        assert (state["status"], state["retry_count"]) == ("timed_out", 3)
        assert sql.execute("SELECT count(*) FROM deliveries WHERE command_id = %s",
                           (cid,)).fetchone()[0] == 4
    assert deliveries[acked_late] == [1, 2]
    assert fleet.command(acked_late)["status"] == "running"
    bad = sql.execute("SELECT count(*) FROM commands c WHERE retry_count <> "
                      "(SELECT count(*) FROM deliveries d WHERE d.command_id = c.id) - 1").fetchone()[0]
    assert bad == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_ack_redelivery_reaper_cancel_races_never_change_a_final_state(start_dispatch, auth, sql, seed):
    from tests.integration.fleet import Fleet

    sql.execute(AUDIT)
    svc = start_dispatch(FLEETLINE_REAPER_INTERVAL_S="0.05")
    fleet = Fleet(auth.url, svc.url)
    agents = [fleet.register() for _ in range(4)]
    rng = random.Random(seed)
    rounds = 150
    outcomes = []

    async def race(client, agent, cid):
        # Make the lease due right now, so the next poll would redeliver it and the reaper
        # may time it out, while ack, result and cancel arrive at the same moment.
        base = f"/api/v1/agents/{agent.agent_id}/commands"
        reqs = [
            client.get(base, params={"limit": 100}, headers=agent.headers),
            client.post(f"{base}/{cid}/ack", headers=agent.headers),
            client.post(f"{base}/{cid}/result", headers=agent.headers,
                        json={"status": rng.choice(["succeeded", "failed"]), "exit_code": 0}),
            client.post(f"/api/v1/admin/commands/{cid}/cancel", headers=fleet.admin),
            client.get(base, params={"limit": 100}, headers=agent.headers),
        ]
        rng.shuffle(reqs)
        responses = await asyncio.gather(*reqs)
        for r in responses:
            assert r.status_code in (200, 202, 409), r.text  # 202: a delivered command's cancel
        outcomes.append(responses)

    async def main():
        async with httpx.AsyncClient(base_url=svc.url, timeout=60,
                                     limits=httpx.Limits(max_connections=64)) as client:
            batch = []
            for i in range(rounds):
                agent = agents[i % len(agents)]
                cmd = fleet.queue(agent, ack_timeout_s=1, max_retries=rng.randint(0, 2))
                first = fleet.poll(agent, limit=100)["commands"]
                assert cmd["id"] in [c["id"] for c in first]
                batch.append((agent, cmd["id"]))
            sql.execute("UPDATE commands SET visible_at = statement_timestamp() - interval '1 s' "
                        "WHERE status = 'sent'")
            await asyncio.gather(*(race(client, a, c) for a, c in batch))

    asyncio.run(main())
    audit = sql.execute("SELECT command_id, old, new FROM status_audit ORDER BY at").fetchall()
    assert audit, "the audit trigger saw nothing"
    for cid, old, new in audit:
        assert old not in FINAL, (cid, old, new)
        assert (old, new) in TRANSITIONS, (cid, old, new)
    # A command that ended was never delivered after it ended.
    late = sql.execute("""
        SELECT count(*) FROM deliveries d JOIN commands c ON c.id = d.command_id
         WHERE c.finished_at IS NOT NULL AND d.delivered_at > c.finished_at""").fetchone()[0]
    assert late == 0
    mismatched = sql.execute("SELECT count(*) FROM commands c WHERE retry_count <> "
                             "(SELECT count(*) FROM deliveries d WHERE d.command_id = c.id) - 1").fetchone()[0]
    assert mismatched == 0


def test_expired_commands_are_never_delivered(start_dispatch, auth, sql):
    from tests.integration.fleet import Fleet

    svc = start_dispatch(FLEETLINE_REAPER_INTERVAL_S="0.2")
    fleet = Fleet(auth.url, svc.url)
    agent = fleet.register()
    sent = fleet.queue(agent, ttl_s=1, ack_timeout_s=1, priority=10)["id"]
    pending = fleet.queue(agent, ttl_s=1)["id"]
    assert [c["id"] for c in fleet.poll(agent, limit=1)["commands"]] == [sent]
    assert fleet.command(pending)["status"] == "pending"
    # Past expires_at: whether it was pending or sent, it never comes again.
    sql.execute("UPDATE commands SET expires_at = statement_timestamp() - interval '1 ms', "
                "visible_at = LEAST(visible_at, statement_timestamp())")
    assert fleet.poll(agent, limit=100)["commands"] == []
    wait_until(lambda: {fleet.command(pending)["status"], fleet.command(sent)["status"]} == {"expired"},
               timeout=10, what="the reaper to mark both expired")
    assert fleet.poll(agent, limit=100)["commands"] == []
    assert sql.execute("SELECT count(*) FROM deliveries WHERE command_id = %s", (sent,)).fetchone()[0] == 1
