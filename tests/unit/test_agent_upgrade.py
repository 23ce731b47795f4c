"""The agent's side of an upgrade (agent/upgrade.py), against real files: what it refuses
(and that nothing of a refused release stays), what it stages, and how the release that
starts next settles the command. Runs on Python 3.9 too."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agent import __version__, upgrade
from agent.launcher import PYZ, Layout

RELEASE = b"#!/usr/bin/env python3\nPK" + b"x" * 100_000


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "prefix")
    layout.release_dir(__version__).mkdir(parents=True)
    (layout.release_dir(__version__) / PYZ).write_bytes(b"running")
    layout.switch(__version__)
    return layout


def _served(data: bytes):
    return lambda path: (data[i:i + 8192] for i in range(0, len(data), 8192))


def _params(**over) -> dict:
    return {"version": "99.0.0", "sha256": hashlib.sha256(RELEASE).hexdigest(), "size": len(RELEASE), **over}


def _left(layout: Layout) -> list:
    return sorted(p.name for p in layout.releases.iterdir())


def test_versions_order_as_people_read_them():
    assert upgrade.version_key("1.10.0") > upgrade.version_key("1.9.2")
    assert upgrade.version_key("2.0.0") > upgrade.version_key("1.99.99")
    assert upgrade.version_key("1.0.0") == upgrade.version_key("1.0.0")


@pytest.mark.parametrize("params, reason", [
    ({"version": "0.0.1"}, "older than the running"),
    ({"version": "../../etc"}, "no valid version"),
    ({"version": None}, "no valid version"),
    ({"version": "99.0.0", "sha256": None, "size": None}, "has no release 99.0.0"),
])
def test_what_is_refused_before_anything_is_fetched(layout, params, reason):
    def never(path):
        raise AssertionError("fetched")
    outcome = upgrade.Upgrader(never, layout).run("c-1", params)
    assert outcome.status == "failed" and reason in outcome.output
    assert _left(layout) == [__version__] and layout.read_upgrade() is None


def test_the_running_version_is_already_there():
    outcome = upgrade.Upgrader(_served(RELEASE), None).run("c-1", {"version": __version__})
    assert outcome.status == "succeeded" and "already running" in outcome.output


def test_an_agent_started_without_its_launcher_cannot_upgrade():
    outcome = upgrade.Upgrader(_served(RELEASE), None).run("c-1", _params())
    assert outcome.status == "failed" and "launcher" in outcome.output


@pytest.mark.parametrize("served, reason", [
    (RELEASE[:-1] + b"y", "SHA-256"),
    (RELEASE + b"more", "bytes, the signed command says"),
    (RELEASE[:-10], "bytes, the signed command says"),
])
def test_a_download_that_differs_from_the_signed_digest_is_refused_and_removed(layout, served, reason):
    outcome = upgrade.Upgrader(_served(served), layout).run("c-1", _params())
    assert outcome.status == "failed" and reason in outcome.output
    assert _left(layout) == [__version__]  # no staging, no release
    assert layout.current_version() == __version__ and layout.read_upgrade() is None


def test_a_verified_release_is_staged_beside_the_running_one_and_switched_to(layout):
    with pytest.raises(upgrade.Restarting):
        upgrade.Upgrader(_served(RELEASE), layout).run("c-1", _params(upgrade_timeout_s=30))
    assert (layout.release_dir("99.0.0") / PYZ).read_bytes() == RELEASE
    assert (layout.release_dir(__version__) / PYZ).read_bytes() == b"running"
    assert layout.current_version() == "99.0.0"
    state = layout.read_upgrade()
    assert (state["state"], state["previous"], state["from"], state["to"]) == (
        "pending", __version__, __version__, "99.0.0")


def test_a_rolled_back_upgrade_is_reported_failed_with_its_reason(layout):
    layout.write_upgrade({"state": "rolled_back", "command_id": "c-1", "from": __version__, "to": "99.0.0",
                          "reason": "the agent exited with 3 during the upgrade"})
    command_id, outcome = upgrade.settle(layout)
    assert command_id == "c-1" and outcome is not None and outcome.status == "failed"
    assert "exited with 3" in outcome.output and layout.read_upgrade() is None


def test_the_new_release_confirms_once_and_records_before_it_marks(layout):
    layout.write_upgrade({"state": "pending", "command_id": "c-1", "from": "0.9", "to": __version__,
                          "previous": "0.9", "deadline": 0})
    assert upgrade.settle(layout) == ("c-1", None)
    recorded = []

    def record(outcome):
        assert layout.read_upgrade()["state"] == "pending"  # recorded first: a crash here rolls back
        recorded.append(outcome)

    outcome = upgrade.confirm(layout, "c-1", record)
    assert outcome is not None and outcome.status == "succeeded" and recorded == [outcome]
    assert f"from 0.9 to {__version__}" in outcome.output
    assert layout.read_upgrade()["state"] == "confirmed"
    assert upgrade.confirm(layout, "c-1", record) is None and len(recorded) == 1


def test_an_agent_stopping_while_others_run_does_not_switch(layout):
    outcome = upgrade.Upgrader(_served(RELEASE), layout, quiesce=lambda: False).run("c-1", _params())
    assert outcome.status == "failed" and "stopped before switching" in outcome.output
    assert layout.current_version() == __version__ and layout.read_upgrade() is None
