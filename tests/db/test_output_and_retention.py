"""Live output and retention, in-process on a real PostgreSQL: chunks placed by offset
(replays, gaps, the cap, another agent's command, an ended one), readers following without
a statement while parked, and the pruner deleting what is past its horizon and nothing
else, in batches, one replica at a time."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from fleetline.settings import postgres_url
from services.common.operators import Scope
from services.dispatch.app import DB_SETTINGS
from services.dispatch.lifecycle import commands
from services.dispatch.output import chunks as output
from services.dispatch.output.followers import Followers
from services.dispatch.retention.pruner import Pruner
from tests.db import rows
from tests.db.test_command_operations import _queue
from tests.db.test_job_operations import _job

CAP = 1000


async def _running(db, sql, signer, policy, agent=None, **over) -> tuple[uuid.UUID, uuid.UUID]:
    agent = agent or rows.agent(sql)
    cmd = await _queue(db, signer, agent, **over)
    assert (await commands.claim(db, agent, 1, policy)).commands
    await commands.ack(db, agent, cmd)
    assert rows.status(sql, cmd) == "running"
    return agent, cmd


def _stream(sql, cmd) -> str:
    return "".join(r[0] for r in sql.execute(
        "SELECT data FROM command_output WHERE command_id = %s ORDER BY byte_offset", (cmd,)))


async def test_chunks_land_once_in_order_and_a_gap_or_disagreement_changes_nothing(db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    assert await output.append(db, agent, cmd, 0, "line 1\n", CAP) == {"next_offset": 7, "truncated": False}
    assert await output.append(db, agent, cmd, 0, "line 1\n", CAP) == {"next_offset": 7, "truncated": False}
    with pytest.raises(output.OffsetConflict) as gap:
        await output.append(db, agent, cmd, 20, "line 3\n", CAP)
    assert gap.value.expected == 7
    with pytest.raises(output.OffsetConflict):
        await output.append(db, agent, cmd, 0, "LINE 1\nline 2\n", CAP)
    # An overlap that agrees (a retry of a longer chunk) adds only what is new.
    assert (await output.append(db, agent, cmd, 0, "line 1\nline 2\n", CAP))["next_offset"] == 14
    assert _stream(sql, cmd) == "line 1\nline 2\n"
    assert sql.execute("SELECT count(*) FROM command_output").fetchone()[0] == 2


async def test_concurrent_copies_of_the_same_chunks_store_each_once(db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    text = "".join(f"{i:04d}é\n" for i in range(40))
    raw = text.encode()
    chunks = [(o, raw[o:o + 28].decode()) for o in range(0, len(raw), 28)]  # 28 bytes: whole characters
    sends = [output.append(db, agent, cmd, o, d, 10_000) for o, d in chunks for _ in range(3)]
    results = await asyncio.gather(*sends, return_exceptions=True)
    # Copies arriving before their predecessor are gaps (409), never stored out of order;
    # what the sender does next (resend from expected_offset) completes the stream.
    for o, d in chunks:
        try:
            await output.append(db, agent, cmd, o, d, 10_000)
        except output.OffsetConflict:
            pytest.fail("a chunk in order was refused")
    assert all(r is None or isinstance(r, (dict, output.OffsetConflict)) for r in results)
    assert _stream(sql, cmd) == text
    assert sql.execute("SELECT output_bytes FROM commands WHERE id = %s", (cmd,)).fetchone()[0] == len(raw)


async def test_past_the_cap_the_stream_is_cut_and_marked_and_the_result_keeps_the_end(db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    assert (await output.append(db, agent, cmd, 0, "a" * 900, CAP))["truncated"] is False
    answer = await output.append(db, agent, cmd, 900, "b" * 200, CAP)
    assert answer == {"next_offset": CAP, "truncated": True}
    assert (await output.append(db, agent, cmd, 1100, "c", CAP))["truncated"] is True  # nothing stored
    assert _stream(sql, cmd) == "a" * 900 + "b" * 100
    await commands.report(db, agent, cmd, "succeeded", {"exit_code": 0, "output": "the end", "started_at": None,
                                                       "finished_at": None})
    page = await output.read(db, cmd, 0)
    assert (page.truncated, page.complete, len(page.data)) == (True, True, CAP)
    assert rows_result(sql, cmd)["output"] == "the end"


def rows_result(sql, cmd) -> dict:
    return sql.execute("SELECT result FROM commands WHERE id = %s", (cmd,)).fetchone()[0]


async def test_only_a_running_command_of_this_agent_takes_output(db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    other = rows.agent(sql)
    with pytest.raises(commands.CommandNotFound):
        await output.append(db, other, cmd, 0, "not yours", CAP)
    pending = await _queue(db, signer, agent)
    with pytest.raises(output.NotRunning):
        await output.append(db, agent, pending, 0, "too early", CAP)
    await commands.report(db, agent, cmd, "failed", {"exit_code": 1, "output": "", "started_at": None,
                                                    "finished_at": None})
    with pytest.raises(output.NotRunning):
        await output.append(db, agent, cmd, 0, "too late", CAP)
    assert sql.execute("SELECT count(*) FROM command_output").fetchone()[0] == 0


async def test_a_reader_pages_through_the_stream_and_a_silent_command_reads_as_its_result(db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    await output.append(db, agent, cmd, 0, "héllo ", CAP)
    await output.append(db, agent, cmd, 7, "world", CAP)
    page = await output.read(db, cmd, 0)
    assert (page.data, page.next_offset, page.complete) == ("héllo world", 12, False)
    assert (await output.read(db, cmd, 2)).data == "llo world"  # inside é: from the next character
    assert (await output.read(db, cmd, 12)).data == ""
    agent2, silent = await _running(db, sql, signer, policy)
    await commands.report(db, agent2, silent, "succeeded", {"exit_code": 0, "output": '{"ok": true}',
                                                           "started_at": None, "finished_at": None})
    page = await output.read(db, silent, 0)
    assert (page.data, page.complete) == ('{"ok": true}', True)
    with pytest.raises(commands.CommandNotFound):  # outside the reader's scope: there is none
        await output.read(db, cmd, 0, Scope(labels={"env": "prod"}))


async def test_a_follower_reads_nothing_while_parked_and_wakes_when_woken(db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    followers = Followers()
    reads = 0

    async def read_page():
        nonlocal reads
        reads += 1
        return await output.read(db, cmd, 0)

    never = asyncio.Event()

    async def receive():
        await never.wait()
        return {"type": "http.disconnect"}

    task = asyncio.create_task(followers.follow(str(cmd), 30, receive, read_page))
    while followers.held() == 0 or reads == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert reads == 1  # parked: not a statement
    await output.append(db, agent, cmd, 0, "news", CAP)
    followers.wake(str(cmd))  # what the listener does on fleetline_output
    page = await asyncio.wait_for(task, 5)
    assert (page.data, reads) == ("news", 2)
    assert followers.held() == 0


# --- retention --------------------------------------------------------------------------------

def _ended(sql, cmd, days_ago: float, status: str = "succeeded") -> None:
    sql.execute("UPDATE commands SET status = %s, finished_at = now() - make_interval(secs => %s) "
                "WHERE id = %s", (status, days_ago * 86400, cmd))


def _pruner(databases, database_url, **over) -> Pruner:
    settings = dict(interval_s=3600, retention_days=30, batch=3, pause_s=0)
    return Pruner(postgres_url(databases.service_url(database_url)), DB_SETTINGS, **{**settings, **over})


def _count(sql, table: str) -> int:
    return sql.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


async def test_the_pruner_deletes_what_is_past_the_horizon_and_nothing_else(db, sql, signer, policy, databases,
                                                                              database_url):
    agent = rows.agent(sql)
    old = []
    for _ in range(7):  # more than two batches of 3
        a, cmd = await _running(db, sql, signer, policy, agent)
        await output.append(db, a, cmd, 0, "old output", CAP)
        _ended(sql, cmd, 31)
        old.append(cmd)
    young = await _queue(db, signer, agent)
    _ended(sql, young, 29)
    old_pending = await _queue(db, signer, agent)  # never ended: stays, however old
    sql.execute("UPDATE commands SET created_at = now() - interval '90 days' WHERE id = %s", (old_pending,))
    # A job that ended long ago goes whole; a running job's old commands stay.
    agents = [rows.agent(sql) for _ in range(4)]
    done_job, running_job = await _job(db, signer, agents), await _job(db, signer, agents)
    sql.execute("UPDATE commands SET status = 'succeeded', finished_at = now() - interval '40 days' "
                "WHERE job_id = %s OR job_id = %s", (done_job["id"], running_job["id"]))
    sql.execute("UPDATE jobs SET status = 'completed', finished_at = now() - interval '40 days' WHERE id = %s",
                (done_job["id"],))
    # Audit events: the creations above are young; two made old.
    sql.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
    sql.execute("UPDATE audit_events SET at = now() - interval '400 days' WHERE id IN "
                "(SELECT id FROM audit_events ORDER BY at LIMIT 2)")
    sql.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    audit_before = _count(sql, "audit_events")
    # A schedule's runs: four before the horizon go (two batches), one after it stays.
    schedule_id = uuid.uuid4()
    sql.execute("INSERT INTO schedules (id, name, selector, command, rollout, interval_s, anchor_at, status, "
                "next_run_at, created_at, updated_at, created_by_id, created_by_name) VALUES (%s, 'n', '{}', "
                "'{}', '{}', 60, now(), 'active', now(), now(), now(), %s, 'x')", (schedule_id, uuid.uuid4()))
    for days in (40, 39, 38, 31, 1):
        sql.execute("INSERT INTO schedule_runs (schedule_id, scheduled_for, started_at, outcome) "
                    "VALUES (%s, now() - make_interval(days => %s), now(), 'skipped_missed')", (schedule_id, days))

    # Webhook deliveries: ended and old go; an old one still owed (pending) and a young one stay.
    endpoint = uuid.uuid4()
    sql.execute("INSERT INTO webhook_endpoints (id, url, events, secret, created_by) "
                "VALUES (%s, 'https://example.com/', '{job.finished}', 'whsec_x', 'x')", (endpoint,))
    for status, days in (("delivered", 40), ("failed", 35), ("pending", 50), ("delivered", 2)):
        sql.execute("INSERT INTO webhook_deliveries (id, endpoint_id, event_type, body, status, created_at) "
                    "VALUES (gen_random_uuid(), %s, 'job.finished', '{}', %s, now() - make_interval(days => %s))",
                    (endpoint, status, days))

    pruner = _pruner(databases, database_url)
    deleted = await pruner.prune()
    assert deleted == {"commands": 7, "job_commands": 4, "jobs": 1, "schedule_runs": 4, "webhook_deliveries": 2,
                       "audit_events": 2}
    assert _count(sql, "schedule_runs") == 1
    assert sorted(r[0] for r in sql.execute("SELECT status FROM webhook_deliveries")) == ["delivered", "pending"]
    left = {r[0] for r in sql.execute("SELECT id FROM commands")}
    assert left == {young, old_pending} | {r[0] for r in sql.execute(
        "SELECT id FROM commands WHERE job_id = %s", (running_job["id"],))}
    assert len(left) == 6
    assert {r[0] for r in sql.execute("SELECT id FROM jobs")} == {running_job["id"]}
    assert _count(sql, "command_output") == 0
    assert sql.execute("SELECT count(*) FROM deliveries WHERE command_id = ANY(%s)", (old,)).fetchone()[0] == 0
    assert _count(sql, "audit_events") == audit_before - 2
    assert await pruner.prune() == dict.fromkeys(deleted, 0)  # nothing more is due
    assert 29 * 86400 < pruner.oldest_age_s("commands") < 30 * 86400


async def test_two_replicas_never_prune_at_once(db, sql, signer, policy, databases, database_url):
    agent = rows.agent(sql)
    for _ in range(6):
        _, cmd = await _running(db, sql, signer, policy, agent)
        _ended(sql, cmd, 40)
    first = _pruner(databases, database_url, batch=1, pause_s=0.3)  # ~2 s holding the lock
    second = _pruner(databases, database_url)
    running = asyncio.create_task(first.prune())
    while first.passes == 0:
        await asyncio.sleep(0.01)
    assert await second.prune() is None  # the first holds the lock: the second stands aside
    assert (await running)["commands"] == 6
    assert (await second.prune())["commands"] == 0  # the lock is free again once the pass ends
    assert _count(sql, "commands") == 0


async def test_auth_prunes_its_own_expired_console_sessions_and_long_expired_operator_tokens(db, sql):
    from services.auth.pruner import AuthPruner

    op = uuid.uuid4()
    sql.execute("INSERT INTO operators (id, name, role, scope) VALUES (%s, 'p', 'viewer', %s)",
                (op, json.dumps({"labels": {}, "command_types": ["*"]})))
    for days, note in ((-1, "live"), (10, "recently expired"), (40, "long expired")):
        sql.execute("INSERT INTO operator_tokens (id, operator_id, token_hash, note, expires_at) "
                    "VALUES (%s, %s, %s, %s, now() - make_interval(days => %s))",
                    (uuid.uuid4(), op, uuid.uuid4().bytes, note, days))
    for minutes in (-5, 5):
        sql.execute("INSERT INTO operator_sessions (id_hash, operator_id, method, expires_at) "
                    "VALUES (%s, %s, 'password', now() - make_interval(mins => %s))",
                    (uuid.uuid4().bytes, op, minutes))
    deleted = await AuthPruner(db, 3600, retention_days=30).prune()
    assert (deleted["operator_sessions"], deleted["operator_tokens"]) == (1, 1)
    assert sorted(r[0] for r in sql.execute("SELECT note FROM operator_tokens")) == ["live", "recently expired"]
    assert _count(sql, "operator_sessions") == 1


async def test_claims_keep_flowing_while_a_large_backlog_is_pruned(db, sql, signer, policy, databases, database_url):
    old_agent, busy = rows.agent(sql), rows.agent(sql)
    sql.execute("""
        INSERT INTO commands (id, agent_id, type, status, max_retries, ack_timeout_s, run_timeout_s, visible_at,
                              expires_at, finished_at, created_at)
        SELECT gen_random_uuid(), %s, 'ping', 'succeeded', 0, 60, 60, now(), now(), now() - interval '40 days',
               now() - interval '40 days'
          FROM generate_series(1, 20000)""", (old_agent,))
    for _ in range(200):
        await _queue(db, signer, busy)
    pruner = _pruner(databases, database_url, batch=1000, pause_s=0.02)
    pruning = asyncio.create_task(pruner.prune())
    claimed_while_pruning = 0
    while not pruning.done():
        claim = await commands.claim(db, busy, 1, policy)
        if not pruning.done():
            claimed_while_pruning += len(claim.commands)
        await asyncio.sleep(0)
    assert (await pruning)["commands"] == 20000
    assert claimed_while_pruning > 0  # the claim never waited for the pruner to finish
    assert sql.execute("SELECT count(*) FROM commands WHERE agent_id = %s", (old_agent,)).fetchone()[0] == 0
    assert sql.execute("SELECT count(*) FROM commands WHERE agent_id = %s", (busy,)).fetchone()[0] == 200


async def test_a_follower_whose_client_leaves_while_parked_is_let_go_at_once(db, sql, signer, policy):
    agent, cmd = await _running(db, sql, signer, policy)
    followers = Followers()
    left = asyncio.Event()

    async def receive():  # the client hangs up while its read is held
        await left.wait()
        return {"type": "http.disconnect"}

    task = asyncio.create_task(followers.follow(str(cmd), 60, receive, lambda: output.read(db, cmd, 0)))
    while followers.held() == 0:
        await asyncio.sleep(0.01)
    left.set()
    assert await asyncio.wait_for(task, 2) is None  # nothing answered to nobody, long before 60 s
    assert followers.held() == 0
