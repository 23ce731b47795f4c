"""`agent.upgrade` on the agent's side (docs/api.md, agent releases). The signed payload
names the version and, filled in by the server when it signed, the size and SHA-256 of
the release for this machine's platform. The agent downloads it from the gateway, refuses
it unless both match, installs it beside the running release (never over it), writes the
pending upgrade for the launcher (launcher.py), switches `current` and exits for the
launcher to start the new release. That release reports the command `succeeded` after its
first authenticated poll; if it cannot, the launcher puts the previous one back, which
reports `failed` with the reason (settle()).

Python 3.9 (the agent's own distribution)."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Tuple

from agent import __version__
from agent.handlers import Outcome
from agent.launcher import PYZ, Layout
from agent.log import Log
from fleetline.release_names import VERSION

log = Log()
DEFAULT_TIMEOUT_S = 120
CHUNK = 256 * 1024


def this_platform() -> str:
    """The platform releases are built for, as registration reports it (os-arch)."""
    return f"{platform.system().lower()}-{platform.machine()}"


def version_key(version: str) -> Tuple:
    """Orders versions the way people read them: 1.10.0 after 1.9.2 (numbers as numbers)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.+_-]", version))


def install_dir() -> Optional[Layout]:
    """The installation the launcher runs this agent from; None when it was started some
    other way (then it cannot upgrade itself)."""
    prefix = os.environ.get("FLEETLINE_AGENT_INSTALL_DIR")
    return Layout(Path(prefix)) if prefix else None


class Restarting(Exception):
    """The new release is in place and `current` points at it: the agent exits RESTART and
    the command stays running until the new release settles it."""


class Upgrader:
    def __init__(self, download: Callable[[str], Iterable[bytes]], layout: Optional[Layout],
                 quiesce: Callable[[], bool] = lambda: True):
        # quiesce: take no more commands and wait for the others running to end (True), or
        # for a stop (False): an upgrade never cuts another command short.
        self.download, self.layout, self.quiesce = download, layout, quiesce

    def run(self, command_id: str, params: dict) -> Outcome:
        """Outcome when there is nothing to restart for (already there, or refused);
        raises Restarting once the new release is in place."""
        version = params.get("version")
        if not isinstance(version, str) or not VERSION.fullmatch(version):
            return Outcome("failed", None, "upgrade refused: no valid version in the command")
        if version == __version__:
            return Outcome("succeeded", 0, f"already running version {version}")
        if version_key(version) < version_key(__version__) and params.get("allow_downgrade") is not True:
            return Outcome("failed", None, f"upgrade refused: {version} is older than the running {__version__} "
                                           "(allow_downgrade was not given)")
        if self.layout is None:
            return Outcome("failed", None, "upgrade refused: this agent was not installed with its launcher "
                                           "(python3 fleetline-agent.pyz install)")
        sha256, size = params.get("sha256"), params.get("size")
        if not isinstance(sha256, str) or not isinstance(size, int) or isinstance(size, bool):
            return Outcome("failed", None, f"upgrade refused: the server has no release {version} for "
                                           f"{this_platform()}")
        problem = self._stage(version, sha256, size)
        if problem is not None:
            return Outcome("failed", None, f"upgrade refused: {problem}")
        if not self.quiesce():
            return Outcome("failed", None, f"the agent stopped before switching to {version}; "
                                           f"still running {__version__}")
        timeout = params.get("upgrade_timeout_s")
        timeout = timeout if isinstance(timeout, int) and not isinstance(timeout, bool) else DEFAULT_TIMEOUT_S
        layout = self.layout
        with layout.locked():
            layout.write_upgrade({"state": "pending", "command_id": command_id, "from": __version__,
                                  "to": version, "previous": layout.current_version(),
                                  "deadline": time.time() + timeout})
            layout.switch(version)
        log.info("upgrade", "upgrade_switched", command_id=command_id, version_from=__version__, version_to=version)
        raise Restarting()

    def _stage(self, version: str, sha256: str, size: int) -> Optional[str]:
        """The release downloaded and checked into releases/<version>/; what was wrong, if
        anything (then nothing of it is left)."""
        assert self.layout is not None
        url = f"/api/v1/agent-releases/{version}/{this_platform()}"
        staging = self.layout.releases / f".staging-{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            got, digest = self._fetch(url, staging / PYZ, size)
            if got != size:
                return f"the download is {got} bytes, the signed command says {size}"
            if digest != sha256:
                return f"the download's SHA-256 is {digest}, the signed command says {sha256}"
            final = self.layout.release_dir(version)
            if final.exists():  # an earlier attempt's (never the running release: version differs)
                shutil.rmtree(final)
            os.replace(staging, final)
            return None
        except OSError as exc:
            return f"cannot download or store the release: {exc}"
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _fetch(self, url: str, dest: Path, size: int) -> Tuple[int, str]:
        """Streams the download to `dest`, reading at most one byte past the signed size."""
        digest, got = hashlib.sha256(), 0
        with open(dest, "wb") as out:
            for chunk in self.download(url):
                got += len(chunk)
                if got > size:
                    return got, ""
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return got, digest.hexdigest()


def settle(layout: Optional[Layout]) -> Tuple[Optional[str], Optional[Outcome]]:
    """At start: the upgrade this release must settle. (command id, None) while this
    release is the pending one (it reports success after its first poll: confirm()); (id,
    failed outcome) when the launcher rolled back to this release or this is not the
    release the upgrade went to; (None, None) when there is none."""
    if layout is None:
        return None, None
    with layout.locked():
        state = layout.read_upgrade()
        if state is None or not isinstance(state.get("command_id"), str):
            layout.clear_upgrade()
            return None, None
        command_id = state["command_id"]
        if state.get("state") == "pending" and state.get("to") == __version__:
            return command_id, None
        if state.get("state") == "confirmed":
            layout.clear_upgrade()
            return None, None
        reason = state.get("reason") or f"version {state.get('to')} did not take charge"
        layout.clear_upgrade()
    return command_id, Outcome("failed", None, f"upgrade from {state.get('from')} to {state.get('to')} "
                                               f"rolled back: {reason}; running {__version__}")


def confirm(layout: Layout, command_id: str, record: Callable[[Outcome], None]) -> Optional[Outcome]:
    """After this release's first authenticated poll: the upgrade it was started for
    succeeded, recorded (`record`: the journal) and marked confirmed under the launcher's
    lock, so a rollback at that moment cannot also happen. None when the launcher rolled
    it back a moment before."""
    with layout.locked():
        state = layout.read_upgrade()
        if state is None or state.get("state") != "pending" or state.get("command_id") != command_id:
            return None
        outcome = Outcome("succeeded", 0, f"upgraded from {state.get('from')} to {__version__}")
        record(outcome)  # first: a crash before the mark below rolls back, and that result replaces this one
        state["state"] = "confirmed"
        layout.write_upgrade(state)
    return outcome
