"""Dispatch's background economy: batched last_seen_at, and long polls woken by NOTIFY."""

import re
import time

from tests.integration.dbstate import count_statements
from tests.integration.support import HTTP, wait_until


def test_last_seen_is_written_in_batches_not_per_poll(start_dispatch, auth, sql):
    from tests.integration.fleet import Fleet

    svc = start_dispatch(FLEETLINE_LAST_SEEN_FLUSH_S="1")
    fleet = Fleet(auth.url, svc.url)
    agents = [fleet.register() for _ in range(3)]
    for agent in agents:  # each agent's first use of its credentials is marked once, at once
        fleet.poll(agent)
    agent_updates = count_statements(sql, "UPDATE", "agents")
    for agent in agents:
        for _ in range(5):
            fleet.poll(agent)
    wait_until(lambda: sql.execute("SELECT count(*) FROM agents WHERE last_seen_at IS NOT NULL")
               .fetchone()[0] == 3, timeout=10, what="last_seen flush")
    statements = agent_updates()
    # 15 polls within about a second: one flush, perhaps two if the polls straddled one.
    assert 1 <= statements <= 2


def test_a_held_poll_is_woken_by_notify_well_before_its_recheck(fleet):
    # A parked poll answers only when woken or at its deadline (30 s): within 1 s is NOTIFY.
    assert fleet.queue_to_held_poll(fleet.register()) < 1.0


def test_a_long_poll_with_nothing_due_waits_its_wait_then_answers_empty(fleet):
    agent = fleet.register()
    t0 = time.monotonic()
    body = fleet.poll(agent, wait=1)
    elapsed = time.monotonic() - t0
    assert body["commands"] == []
    assert 0.9 <= elapsed < 5.0  # the server takes up to 10 % off a wait, so a fleet spreads out


def test_metrics_count_the_requests_served(fleet):
    agent = fleet.register()
    fleet.poll(agent)
    fleet.poll(agent)
    text = HTTP.get(f"{fleet.dispatch_url}/metrics").text
    match = re.search(r'fleetline_http_requests_total\{endpoint="poll",service="dispatch",status="200"\} (\S+)', text)
    assert match and float(match.group(1)) >= 2, text
