"""The Prometheus alerting rules shipped in deploy/prometheus/: valid for Prometheus's own
checker, each alert firing (and not before its time) in promtool's rule tests, and every
metric they read exported by dispatch. promtool comes from Debian's prometheus package
(.ci/run installs it): without it this fails rather than skips."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is needed (apt-get install prometheus): the alerting rules are checked with it"
    return found


def test_the_rules_are_valid_and_each_alert_fires_when_it_should():
    checked = subprocess.run([_promtool(), "check", "rules", str(RULES / "alerts.yml")], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([_promtool(), "test", "rules", "alerts.test.yml"], cwd=RULES, capture_output=True,
                            text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = set(re.findall(r"alert: (\w+)", (RULES / "alerts.yml").read_text()))
    assert alerts == set(re.findall(r"alertname: (\w+)", (RULES / "alerts.test.yml").read_text()))


def test_every_metric_the_rules_read_is_exported_by_dispatch():
    exported = (ROOT / "services" / "dispatch" / "app.py").read_text()
    read = set(re.findall(r"\b(fleetline_[a-z_]+)", (RULES / "alerts.yml").read_text()))
    for name in read:
        stem = name.replace("_commands_", "_{table}_")  # the retention gauges are made per table
        assert f'"{name}"' in exported or stem in exported, name
