"""Schedules across real processes: a schedule made from the CLI starts its jobs on time,
once each, through a dispatch restart; two dispatch processes ticking the same schedules
start each tick once; a dispatch SIGKILLed in the middle of a tick leaves nothing of it,
and the next dispatch makes it once. What happened is counted in the database."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from datetime import timedelta

import psycopg
import pytest

from tests.integration.conftest import ADMIN_TOKEN, FAST
from tests.integration.fleet import Fleet
from tests.integration.support import HTTP, ServiceProcess, wait_until
from tests.integration.test_cli import fleetline

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _runs(sql, schedule_id) -> list[tuple]:
    return sql.execute("""
        SELECT r.scheduled_for, r.outcome, j.id, j.created_at - r.scheduled_for
          FROM schedule_runs r LEFT JOIN jobs j ON j.id = r.job_id
         WHERE r.schedule_id = %s ORDER BY r.scheduled_for""", (schedule_id,)).fetchall()


def test_a_schedule_made_from_the_cli_starts_its_jobs_on_time_once_each_through_a_dispatch_restart(
        start_service, start_gateway, auth_started, base_env, tmp_path, sql):
    dispatch = start_service("services.dispatch", FLEETLINE_JWKS_URL=f"{auth_started.url}/.well-known/jwks.json",
                             **FAST)
    gw = start_gateway([auth_started.url], [dispatch.url])
    Fleet(auth_started.url, dispatch.url).register(labels={"role": "web"})
    env = {"FLEETLINE_URL": gw.url, "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN}
    made = fleetline("schedules", "create", "--name", "every-2s", "--every", "2", "--label", "role=web",
                     "--type", "ping", "--overlap", "allow", "--json", env=env)  # nobody runs the pings
    assert made.returncode == 0, made.stderr
    schedule = json.loads(made.stdout)
    assert schedule["status"] == "active" and schedule["interval_s"] == 2

    wait_until(lambda: len(_runs(sql, schedule["id"])) >= 2, 20, 0.1, "two ticks")
    port = dispatch.port
    dispatch.stop()  # SIGTERM; a tick or two falls while no dispatch runs
    time.sleep(2.5)  # the outage itself is what is tested: ticks come due meanwhile
    again = ServiceProcess("services.dispatch", {**base_env, **FAST,
                                                 "FLEETLINE_JWKS_URL": f"{auth_started.url}/.well-known/jwks.json"},
                           tmp_path, port=port).wait_ready()
    try:
        wait_until(lambda: len([r for r in _runs(sql, schedule["id"]) if r[1] == "started"]) >= 5, 30, 0.1,
                   "three more started ticks")
        _check_runs(sql, schedule["id"])
        listed = fleetline("schedules", "runs", schedule["id"], env=env)
        assert listed.returncode == 0 and "started" in listed.stdout
        shown = fleetline("schedules", "list", env=env)
        assert "every-2s" in shown.stdout and "every 2 s" in shown.stdout
        paused = fleetline("schedules", "pause", schedule["id"], "--json", env=env)
        assert json.loads(paused.stdout)["status"] == "paused"
    finally:
        again.stop()


def _check_runs(sql, schedule_id) -> None:
    runs = _runs(sql, schedule_id)
    ticks = [r[0] for r in runs]
    assert len(ticks) == len(set(ticks))  # each tick once
    assert all((b - a).total_seconds() % 2 == 0 for a, b in zip(ticks, ticks[1:], strict=False))  # on the 2 s grid
    started = [r for r in runs if r[1] == "started"]
    assert all(r[2] is not None for r in started)  # every started run has its job, and no job lacks its run
    assert sql.execute("SELECT count(*) FROM jobs WHERE schedule_id = %s", (schedule_id,)).fetchone()[0] == \
        len(started)
    # While a dispatch ran, each job started within 2 s of its tick (the outage's ticks are
    # missed, or started late within the grace: none of them twice).
    assert sum(1 for r in started if r[3] <= timedelta(seconds=2)) >= 4, runs


def test_two_dispatch_processes_ticking_the_same_schedules_start_each_tick_once(
        start_dispatch, auth_started, sql):
    fast = {"FLEETLINE_SCHEDULE_TICK_S": "0.05", **FAST}
    one, two = start_dispatch(**fast), start_dispatch(**fast)
    fleet = Fleet(auth_started.url, one.url)
    fleet.register(labels={"role": "web"})
    ids = [fleet.admin_call("POST", "/schedules", 201, json={
        "name": f"race-{i}", "selector": {"labels": {"role": "web"}}, "command": {"type": "ping"},
        "interval_s": 3600, "overlap": "allow"})["id"] for i in range(50)]
    for expected in (50, 100):  # 100 ticks: each round makes every schedule due at a new instant
        sql.execute("UPDATE schedules SET next_run_at = now() - interval '1 s' WHERE id = ANY(%s)", (ids,))
        wait_until(lambda n=expected: sql.execute("SELECT count(*) FROM schedule_runs").fetchone()[0] == n,
                   30, 0.05, "every schedule ticked")
    assert sql.execute("SELECT count(*) FROM schedule_runs WHERE outcome = 'started'").fetchone()[0] == 100
    assert sql.execute("SELECT count(*) FROM jobs WHERE schedule_id IS NOT NULL").fetchone()[0] == 100
    assert sql.execute("SELECT count(*) FROM (SELECT schedule_id, scheduled_for FROM jobs WHERE schedule_id "
                       "IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) twice").fetchone()[0] == 0
    # Which process ticked which is theirs to share; between them, each tick once.
    split = [_started(d.url) for d in (one, two)]
    assert sum(split) == 100, split


def _started(url: str) -> float:
    found = re.search(r'^fleetline_schedule_runs_total\{outcome="started"\} (\S+)$', HTTP.get(f"{url}/metrics").text,
                      re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("targets", [4000])
def test_a_dispatch_killed_in_the_middle_of_a_tick_leaves_nothing_and_the_next_makes_it_once(
        start_dispatch, auth_started, sql, database_url, databases, targets):
    dispatch = start_dispatch(FLEETLINE_SCHEDULE_TICK_S="0.05", **FAST)
    fleet = Fleet(auth_started.url, dispatch.url)
    # Many targets, so the tick's transaction (sign and insert every command) lasts long enough to be caught.
    sql.execute("""
        WITH t AS (INSERT INTO registration_tokens (id, token_hash, max_uses, uses, expires_at)
                   VALUES (gen_random_uuid(), gen_random_uuid()::text::bytea, %s, %s, now() + interval '1 day')
                   RETURNING id)
        INSERT INTO agents (id, machine_id, registration_token_id, hostname, labels, status)
        SELECT gen_random_uuid(), 'm-' || n, t.id, 'h', '{"role": "bulk"}', 'active'
          FROM t, generate_series(1, %s) n""", (targets, targets, targets))
    schedule = fleet.admin_call("POST", "/schedules", 201, json={
        "name": "bulk", "selector": {"labels": {"role": "bulk"}}, "command": {"type": "ping"},
        "interval_s": 3600})
    watcher = psycopg.connect(databases.service_url(database_url), autocommit=True)
    holding = """SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                  WHERE c.relname = 'schedules' AND l.mode = 'RowShareLock' AND l.pid <> pg_backend_pid()"""
    sql.execute("UPDATE schedules SET next_run_at = now() - interval '1 s' WHERE id = %s", (schedule["id"],))
    caught = wait_until(lambda: watcher.execute(holding).fetchone()[0] > 0, 10, 0.001, "a tick in progress")
    os.kill(dispatch.proc.pid, signal.SIGKILL)
    dispatch.proc.wait(10)
    watcher.close()
    assert caught
    # Rolled back whole: no run, no job, no command of it; the tick is still due.
    wait_until(lambda: sql.execute(holding).fetchone()[0] == 0, 10, 0.05, "the killed tick's lock to go")
    assert sql.execute("SELECT count(*) FROM schedule_runs").fetchone()[0] == 0
    assert sql.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    assert sql.execute("SELECT count(*) FROM commands").fetchone()[0] == 0

    start_dispatch(FLEETLINE_SCHEDULE_TICK_S="0.05", **FAST)
    wait_until(lambda: sql.execute("SELECT count(*) FROM schedule_runs").fetchone()[0] == 1, 30, 0.1,
               "the tick made by the next dispatch")
    assert sql.execute("SELECT outcome FROM schedule_runs").fetchone()[0] == "started"
    assert sql.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    assert sql.execute("SELECT count(*) FROM commands").fetchone()[0] == targets
