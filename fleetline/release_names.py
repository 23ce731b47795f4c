"""How agent releases are named, written once for everyone who names or reads one: the
build (agent_release.py), the server that stores and serves them
(services/dispatch/releases/), the CLI that uploads them and the agent that installs them
(agent/upgrade.py; the agent's distribution carries this module). A version is what the
agent reports; it becomes a directory name on every machine, so it is letters, digits
and `. + _ -`, never a path. Standard library only."""

from __future__ import annotations

import re

VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
PLATFORM = re.compile(r"[a-z0-9]{1,16}-[a-z0-9_]{1,32}")  # os-arch, as agents register: linux-x86_64
FILE = re.compile(rf"fleetline-agent-(?P<version>{VERSION.pattern})-(?P<platform>{PLATFORM.pattern})\.pyz")


def file_name(version: str, platform: str) -> str:
    return f"fleetline-agent-{version}-{platform}.pyz"
