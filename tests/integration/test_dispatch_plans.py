"""The plans of the statements that must stay index probes, under dispatch's pinned settings."""

import time

import psycopg

from services.dispatch.app import DB_SETTINGS
from services.dispatch.lifecycle import queries as q
from tests.integration.dbstate import count_statements


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
        for (by_agent, by_status, scoped), statement in q.LIST_COMMANDS.items():
            types = ["timestamptz", "uuid", "int"] + ["uuid"] * by_agent + ["text"] * by_status + ["jsonb"] * scoped
            conn.execute(f"PREPARE l({', '.join(types)}) AS {statement}")
            args = ["'infinity'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "101"]
            args += [f"'{agent.agent_id}'"] * by_agent + ["'succeeded'"] * by_status + ["'{\"env\": \"test\"}'"] * scoped
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN EXECUTE l({', '.join(args)})"))
            conn.execute("DEALLOCATE l")
            assert "Seq Scan on commands" not in plan and "Sort" not in plan, plan
            assert "Index Scan" in plan, plan


def _assert_counts_read_the_job_index(conn, job_id: str) -> None:
    for k, v in DB_SETTINGS.items():
        conn.execute(f"SET {k} = {v}")
    with conn.transaction():  # as jobs.counts runs it
        conn.execute(q.JOB_INDEX_ONLY)
        plan = _explain(conn, "c", ["uuid[]"], q.JOB_COUNTS, [f"ARRAY[{job_id}]::uuid[]"])
    assert "commands_job_" in plan and "Seq Scan on commands" not in plan, plan


def _explain(conn, name: str, types: list[str], statement: str, args: list[str]) -> str:
    conn.execute(f"PREPARE {name}({', '.join(types)}) AS {statement}")
    plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN EXECUTE {name}({', '.join(args)})"))
    conn.execute(f"DEALLOCATE {name}")
    return plan


def test_a_job_of_10000_targets_fans_out_in_one_statement_and_its_reads_use_indexes(auth, start_dispatch, sql,
                                                                                    database_url):
    from tests.integration.fleet import Fleet

    # Made whole in its request (a larger job would be made in slices: test_large_jobs.py).
    fleet = Fleet(auth.url, start_dispatch(FLEETLINE_JOB_SLICE_TARGETS="20000").url)
    fleet.register()  # leaves a registration token the bulk-inserted agents can name
    token = sql.execute("SELECT id FROM registration_tokens LIMIT 1").fetchone()[0]
    sql.execute("""
        INSERT INTO agents (id, machine_id, registration_token_id, hostname, labels)
        SELECT gen_random_uuid(), 'bulk-' || n, %s, 'bulk-' || n,
               jsonb_build_object('env', CASE WHEN n <= 10000 THEN 'prod' ELSE 'dev' END, 'n', n::text)
          FROM generate_series(1, 20000) AS n""", (token,))
    sql.execute("ANALYZE agents")
    command_inserts = count_statements(sql, "INSERT", "commands")  # a 10,000-target job: one
    job = fleet.run_job({"labels": {"env": "prod"}}, rollout={"max_in_flight": 100})
    assert job["target_count"] == 10000 and sum(job["counts"].values()) == 10000
    assert job["counts"]["pending"] == 100 and job["counts"]["waiting"] == 9900
    assert command_inserts() == 1
    sql.execute("ANALYZE commands")
    job_id = f"'{job['id']}'"
    with psycopg.connect(database_url, autocommit=True) as conn:
        # The job is the whole table here: left to its estimates, the planner reads the
        # table per job listed. A job's counts read its own index entries whatever its share.
        _assert_counts_read_the_job_index(conn, job_id)
    # Job commands are a small share of all commands, as in a fleet that has run a while
    # (with few other commands, reading the whole table is rightly the cheaper plan).
    sql.execute("""
        INSERT INTO commands (id, agent_id, type, max_retries, ack_timeout_s, run_timeout_s,
                              expires_at, visible_at, status)
        SELECT gen_random_uuid(), a.id, 'ping', 5, 300, 3600, now() + interval '1 day', now(), 'succeeded'
          FROM (SELECT id FROM agents LIMIT 10000) AS a, generate_series(1, 30)""")
    sql.execute("VACUUM ANALYZE commands")
    with psycopg.connect(database_url, autocommit=True) as conn:
        _assert_counts_read_the_job_index(conn, job_id)
        for k, v in DB_SETTINGS.items():
            conn.execute(f"SET {k} = {v}")
        facts = _explain(conn, "p", ["uuid", "bool", "int", "int"], q.JOB_PROGRESS, [job_id, "true", "3", "2"])
        assert "Seq Scan" not in facts and facts.count("commands_job_") == 5, facts  # canary's succeeded too
        release = _explain(conn, "r", ["uuid", "int"], q.RELEASE_WAITING, [job_id, "10"])
        assert "commands_job_waiting" in release and "Seq Scan" not in release, release
        for filtered, statement in q.LIST_TARGETS.items():
            types = ["uuid", "uuid", "int"] + ["text"] * filtered
            args = [job_id, "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "101"] + ["'waiting'"] * filtered
            plan = _explain(conn, "t", types, statement, args)
            assert "commands_job_target" in plan and "Sort" not in plan, plan
