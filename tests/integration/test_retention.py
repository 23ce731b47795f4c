"""Retention through the running fleet: with a horizon of a few seconds, a finished command
disappears from the API (and its output and ledger from the database), a running one and a
pending one stay, and dispatch's metrics count what was pruned."""

from __future__ import annotations

import re

import pytest

from tests.integration.support import HTTP, wait_until

HORIZON = {"FLEETLINE_RETENTION_DAYS": str(3 / 86400), "FLEETLINE_PRUNE_INTERVAL_S": "0.5"}


@pytest.mark.parametrize("stack_env", [HORIZON])
def test_finished_history_goes_at_the_horizon_and_live_commands_stay(fleet_stack, sql):
    fleet_stack.agent("a1")
    agent_id = fleet_stack.agent_id()
    done = fleet_stack.queue(agent_id, "shell", params={"argv": ["echo", "bye"]})["id"]
    fleet_stack.wait_status(done, {"succeeded"})
    running = fleet_stack.queue(agent_id, "shell", params={"argv": ["sleep", "30"], "timeout_s": 60})["id"]
    fleet_stack.wait_status(running, {"running"})
    gone = wait_until(lambda: fleet_stack.api("GET", f"/commands/{done}").status_code == 404, 30, 0.2,
                      "the finished command to be pruned")
    assert gone
    assert sql.execute("SELECT count(*) FROM deliveries WHERE command_id = %s", (done,)).fetchone()[0] == 0
    assert sql.execute("SELECT count(*) FROM command_output WHERE command_id = %s", (done,)).fetchone()[0] == 0
    assert fleet_stack.command(running)["status"] == "running"  # live: never pruned, however old
    # The pass counts what it deleted once it has gone through every table.
    def pruned() -> float:
        metrics = HTTP.get(f"{fleet_stack.services['dispatch'].url}/metrics").text
        found = re.search(r'^fleetline_pruned_rows_total\{table="commands"\} (\S+)$', metrics, re.M)
        return float(found.group(1)) if found else 0.0

    assert wait_until(lambda: pruned() >= 1, 10, 0.2, "the pruned commands counted")
