"""What the agent was told at start (flags or FLEETLINE_AGENT_* variables: cli.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

LONG_POLL_WAIT_S = 55  # the default hold: within the server's default longest wait (60 s)


def _no_token() -> Optional[str]:
    return None


@dataclass(frozen=True)
class Config:
    server: str
    state_dir: Path
    machine_id: Optional[str] = None
    # The registration token as it is now: read again before every registration, so an
    # operator can hand a waiting agent a new one by rewriting its file.
    registration_token: Callable[[], Optional[str]] = _no_token
    allow_shell: bool = False
    max_parallel: int = 4
    long_poll: bool = True
    poll_wait_s: int = LONG_POLL_WAIT_S  # how long a poll asks to be held (the server's FLEETLINE_MAX_WAIT_S caps it)
    labels: Dict[str, str] = field(default_factory=dict)
    root_key: Optional[str] = None  # base64url, from --root-key-file
    root_key_sha256: Optional[str] = None
    ca_file: Optional[str] = None
    facts_dir: Optional[Path] = None  # custom facts: *.json files, reported under custom.<stem>
