"""The plans of the statements that must stay index probes, under dispatch's pinned settings."""

import time
import psycopg

from services.dispatch import queries as q
from services.dispatch.app import DB_SETTINGS


def _plan(database_url, agent_id, generic: bool) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for k, v in DB_SETTINGS.items():
            conn.execute(f"SET {k} = {v}")
        conn.execute(f"SET plan_cache_mode = {'force_generic_plan' if generic else 'force_custom_plan'}")
        sql = q.CLAIM
        conn.execute("PREPARE claim(uuid, int) AS " + sql)
        rows = conn.execute(f"EXPLAIN EXECUTE claim('{agent_id}', 10)").fetchall()
        return "\n".join(r[0] for r in rows)


def test_claim_walks_the_ordered_index_even_for_an_unanalyzed_backlog(fleet, sql, database_url):
    quiet, busy = fleet.register(), fleet.register()
    sql.execute("ANALYZE commands")
    # 50k commands arrive after the last ANALYZE: statistics know nothing of them.
    sql.execute("""
        INSERT INTO commands (id, agent_id, type, max_retries, ack_timeout_s, run_timeout_s,
                              expires_at, visible_at)
        SELECT gen_random_uuid(), %s, 'ping', 5, 300, 3600, now() + interval '1 day', now()
          FROM generate_series(1, 50000)""", (busy.agent_id,))
    for agent in (quiet, busy):
        for generic in (False, True):
            plan = _plan(database_url, agent.agent_id, generic)
            due = plan.split("CTE due")[1].split("CTE claimed")[0]
            assert "Index Scan using commands_claimable" in due, plan
            assert "Bitmap" not in due and "Sort" not in due, plan
            # The whole poll, rapid-mode probes included, is index probes only.
            assert "Seq Scan" not in plan, plan
    t0 = time.perf_counter()
    got = sum(len(fleet.poll(busy, limit=100)["commands"]) for _ in range(20))
    assert got == 2000
    assert time.perf_counter() - t0 < 30  # a bitmap+sort plan would take minutes


def test_admin_listing_walks_an_index_under_generic_plans(fleet, sql, database_url):
    agent = fleet.register()
    sql.execute("""
        INSERT INTO commands (id, agent_id, type, max_retries, ack_timeout_s, run_timeout_s,
                              expires_at, visible_at, status)
        SELECT gen_random_uuid(), %s, 'ping', 5, 300, 3600, now() + interval '1 day', now(), 'succeeded'
          FROM generate_series(1, 20000)""", (agent.agent_id,))
    sql.execute("ANALYZE commands")
    with psycopg.connect(database_url, autocommit=True) as conn:
        for k, v in DB_SETTINGS.items():
            conn.execute(f"SET {k} = {v}")
        for (by_agent, by_status), statement in q.LIST_COMMANDS.items():
            types = ["timestamptz", "uuid", "int"] + ["uuid"] * by_agent + ["text"] * by_status
            conn.execute(f"PREPARE l({', '.join(types)}) AS {statement}")
            args = ["'infinity'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "101"]
            args += [f"'{agent.agent_id}'"] * by_agent + ["'succeeded'"] * by_status
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN EXECUTE l({', '.join(args)})"))
            conn.execute("DEALLOCATE l")
            assert "Seq Scan" not in plan and "Sort" not in plan, plan
            assert "Index Scan" in plan, plan
