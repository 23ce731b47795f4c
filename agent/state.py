"""The agent's credentials (state.json) and its machine id, in the state directory."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from fleetline.private_files import write_private


def secure_dir(path: Path) -> None:
    """The state directory and everything in it readable by the agent's user only: it
    holds credentials and the outputs of past commands."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    for entry in path.iterdir():
        if entry.is_file() and not entry.is_symlink():
            entry.chmod(0o600)


class Credentials:
    def __init__(self, state_dir: Path):
        self.path = state_dir / "state.json"
        self.data: dict = {}

    def load(self) -> bool:
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
            return bool(self.data.get("agent_id") and self.data.get("refresh_token"))
        except (OSError, ValueError):
            self.data = {}
            return False

    def save(self, **fields) -> None:
        self.data.update(fields)
        write_private(self.path, json.dumps(self.data, indent=2))

    def clear(self, keep: tuple[str, ...] = ("root_public_key", "command_keyset")) -> None:
        """Forget the credentials; what the agent trusts (its pinned root) stays."""
        kept = {k: self.data[k] for k in keep if k in self.data}
        self.data = {}
        if kept:
            self.save(**kept)
        else:
            self.path.unlink(missing_ok=True)


def resolve_machine_id(explicit: str | None, state_dir: Path,
                       system_file: Path = Path("/etc/machine-id")) -> str:
    """--machine-id, else /etc/machine-id, else one generated once and kept."""
    if explicit:
        return explicit
    try:
        system = system_file.read_text().strip()
        if system:
            return system
    except OSError:
        pass
    kept = state_dir / "machine-id"
    try:
        existing = kept.read_text().strip()
        if existing:
            return existing
    except OSError:
        pass
    generated = uuid.uuid4().hex
    write_private(kept, generated + "\n")
    return generated
