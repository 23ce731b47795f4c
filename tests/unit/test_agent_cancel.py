"""What a verified cancel does to a running command on the agent (handlers.py): the whole
process group gets SIGTERM, then SIGKILL after the grace if its process is still there,
children included; the result says it was cancelled and keeps the output so far. The
agent's journal records a cancel before it acts on it, and a command it names never starts."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from agent import handlers
from agent.journal import Journal
from agent.stopper import Stopper


def _alive_in_group(pgid: int) -> list[int]:
    """Processes of the group that still run (a zombie waits only for its reaper)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def _gone(pgid: int) -> bool:
    deadline = time.monotonic() + 2  # a SIGKILLed process leaves in a moment, not at once
    while _alive_in_group(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _until_running(pgid: int, count: int) -> list[int]:
    """The group once `count` of its processes run: the shell prints before it forks."""
    deadline = time.monotonic() + 10
    while len(alive := _alive_in_group(pgid)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return alive


def _run_and_cancel(script: str) -> tuple[handlers.Outcome, int, float]:
    """Runs `sh -c script` (which prints its process group first), cancels it once that
    line arrives; the outcome, the group and how long the stop took."""
    ctx = handlers.Context(Stopper(), time.monotonic() + 120, allow_shell=True)
    started = threading.Event()
    seen = bytearray()

    def output(chunk: bytes) -> None:
        seen.extend(chunk)
        if b"\n" in seen:
            started.set()

    ctx.output = output
    answer: dict = {}
    runner = threading.Thread(target=lambda: answer.update(outcome=handlers.shell({"argv": ["sh", "-c", script],
                                                                                  "timeout_s": 600}, ctx)))
    runner.start()
    assert started.wait(10), "the command never started"
    pgid = int(bytes(seen).split(b"\n")[0])
    assert len(_until_running(pgid, 3)) >= 3  # the shell and both its sleeps run
    asked = time.monotonic()
    ctx.cancelled.set()
    runner.join(30)
    assert not runner.is_alive()
    return answer["outcome"], pgid, time.monotonic() - asked


def test_a_cancel_ends_the_command_and_every_child_and_keeps_the_output_so_far():
    outcome, pgid, took = _run_and_cancel('echo $$; echo "so far"; sleep 600 & sleep 600; wait')
    assert outcome.cancelled and outcome.status == "failed"
    assert b"so far" in bytes(outcome.output)  # type: ignore[arg-type]
    assert "[cancelled" in outcome.note
    assert _gone(pgid)
    assert took < handlers.GRACE_S  # SIGTERM was enough


def test_children_that_ignore_sigterm_are_killed_after_the_grace(monkeypatch):
    monkeypatch.setattr(handlers, "GRACE_S", 0.5)
    # An ignored signal stays ignored across exec: the sleeps ignore SIGTERM too.
    outcome, pgid, took = _run_and_cancel("trap '' TERM; echo $$; sleep 600 & sleep 600; wait")
    assert outcome.cancelled and "SIGKILL" in outcome.note
    assert _gone(pgid)
    assert 0.5 <= took < 5


def test_a_cancelled_sleep_ends_at_once():
    ctx = handlers.Context(Stopper(), time.monotonic() + 120, allow_shell=False)
    threading.Timer(0.1, ctx.cancelled.set).start()
    began = time.monotonic()
    outcome = handlers.sleep({"seconds": 60}, ctx)
    assert outcome.cancelled and time.monotonic() - began < 2


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.db")
    yield j
    j.close()


def test_the_journal_records_a_cancel_once_and_keeps_it_across_a_restart(tmp_path: Path, journal):
    assert journal.cancel("c-1") is True
    assert journal.cancel("c-1") is False  # handed over again by a later poll
    journal.close()
    again = Journal(tmp_path / "journal.db")
    try:
        assert again.cancelled("c-1") and not again.cancelled("c-2")
    finally:
        again.close()


def test_a_journal_from_before_cancels_existed_gains_them(tmp_path: Path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "journal.db")
    old.execute("CREATE TABLE commands (id TEXT PRIMARY KEY, type TEXT NOT NULL, status TEXT NOT NULL, "
                "result TEXT, reported INTEGER NOT NULL DEFAULT 0, executions INTEGER NOT NULL DEFAULT 0, "
                "updated_at REAL NOT NULL)")
    old.execute("INSERT INTO commands VALUES ('c-0', 'ping', 'done', '{}', 1, 1, 0)")
    old.commit()
    old.close()
    journal = Journal(tmp_path / "journal.db")
    try:
        assert journal.status("c-0") == "done" and journal.cancel("c-0") is True
    finally:
        journal.close()
