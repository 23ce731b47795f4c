"""The launcher (agent/launcher.py) with real child processes: tiny releases that stage an
upgrade the way the agent does (pending upgrade.json, `current` switched, exit RESTART),
then a new release that exits, hangs or confirms. What the launcher leaves behind is
checked: which release `current` names, the upgrade's state and reason, who ran.

Runs on Python 3.9 too (the agent's tests, without the server's conftest)."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from agent.launcher import PYZ, RESTART, Launcher, Layout

# The release before: stages the upgrade to "2" (a deadline `DEADLINE_S` away), or, once
# the upgrade was rolled back, records that it runs again and exits 0 (the test's end).
OLD = """
import json, os, sys, time
from pathlib import Path
from agent.launcher import Layout
layout = Layout(Path(os.environ["FLEETLINE_AGENT_INSTALL_DIR"]))
with open(layout.prefix / "ran.log", "a") as f:
    f.write("1\\n")
state = layout.read_upgrade()
if state is None:
    with layout.locked():
        layout.write_upgrade({"state": "pending", "command_id": "c-1", "from": "1", "to": "2",
                              "previous": "1", "deadline": time.time() + DEADLINE_S})
        layout.switch("2")
    sys.exit(RESTART)
sys.exit(0)
"""

NEW = {
    "exits": "import sys; sys.exit(3)",
    "hangs": "import time; time.sleep(60)",
    "confirms": """
import os
from pathlib import Path
from agent.launcher import Layout
layout = Layout(Path(os.environ["FLEETLINE_AGENT_INSTALL_DIR"]))
with open(layout.prefix / "ran.log", "a") as f:
    f.write("2\\n")
with layout.locked():
    state = layout.read_upgrade()
    state["state"] = "confirmed"
    layout.write_upgrade(state)
""",
}


@pytest.fixture
def signals():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def _installed(tmp_path: Path, new: str, deadline_s: float) -> Layout:
    layout = Layout(tmp_path / "prefix")
    for version, code in (("1", OLD.replace("DEADLINE_S", str(deadline_s)).replace("RESTART", str(RESTART))),
                          ("2", new)):
        layout.release_dir(version).mkdir(parents=True)
        (layout.release_dir(version) / PYZ).write_text(code)
    layout.switch("1")
    return layout


def _ran(layout: Layout) -> list:
    path = layout.prefix / "ran.log"
    return path.read_text().split() if path.exists() else []


def test_a_new_release_that_exits_is_rolled_back_and_the_old_one_runs_again(tmp_path, signals):
    layout = _installed(tmp_path, NEW["exits"], deadline_s=60)
    assert Launcher(layout, [], sys.executable).run() == 0
    assert layout.current_version() == "1"
    state = layout.read_upgrade()
    assert state["state"] == "rolled_back" and "exited with 3" in state["reason"]
    assert _ran(layout) == ["1", "1"]  # the old release staged it, then ran again


def test_a_new_release_that_never_confirms_is_rolled_back_at_the_deadline(tmp_path, signals):
    layout = _installed(tmp_path, NEW["hangs"], deadline_s=1)
    began = time.monotonic()
    assert Launcher(layout, [], sys.executable).run() == 0
    assert time.monotonic() - began < 20  # the hanging release was stopped, not waited for
    assert layout.current_version() == "1"
    state = layout.read_upgrade()
    assert state["state"] == "rolled_back" and "did not complete a poll in time" in state["reason"]


def test_a_confirmed_upgrade_stays(tmp_path, signals):
    layout = _installed(tmp_path, NEW["confirms"], deadline_s=60)
    assert Launcher(layout, [], sys.executable).run() == 0
    assert layout.current_version() == "2"
    assert layout.read_upgrade()["state"] == "confirmed"
    assert _ran(layout) == ["1", "2"]


def test_a_rollback_after_confirmation_changes_nothing(tmp_path):
    layout = _installed(tmp_path, NEW["confirms"], deadline_s=60)
    layout.write_upgrade({"state": "confirmed", "command_id": "c-1", "previous": "1", "to": "2"})
    layout.switch("2")
    assert layout.roll_back("too late") is None
    assert layout.current_version() == "2"


def test_switching_replaces_the_link_in_one_step(tmp_path):
    layout = _installed(tmp_path, NEW["exits"], deadline_s=60)
    layout.switch("2")
    assert layout.current_version() == "2"
    assert sorted(p.name for p in layout.prefix.iterdir() if p.name.startswith(".current")) == []
    assert json.loads(json.dumps(layout.read_upgrade())) is None
