"""`python3 fleetline-agent-<version>-<platform>.pyz install --prefix DIR [--systemd] [agent
options]`: this release as DIR/releases/<version>/, DIR/current pointing at it, and the
launcher (launcher.py) as DIR/bin/fleetline-agent, which takes the agent's usual options.
With --systemd, a unit that runs the launcher with those options, enabled and started.

The registration token never goes on a command line: --registration-token-file (or
FLEETLINE_AGENT_REGISTRATION_TOKEN) is copied to DIR/registration-token, mode 0600, and
the unit names that file.

Python 3.9 (the agent's own distribution)."""

from __future__ import annotations

import argparse
import os
import pkgutil
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

from agent import __version__
from agent.launcher import PYZ, Layout
from fleetline.private_files import write_private

DEFAULT_PREFIX = Path("/opt/fleetline-agent")
UNIT = "fleetline-agent.service"

# Hardening that leaves what a root command may do alone (commands install packages,
# restart services, write anywhere): no core dumps (the state file holds credentials), a
# kernel keyring of its own, a state directory only root reads, the out-of-memory killer
# reaching for it last (the agent is the fleet's way back in), restarts after any exit
# but a configuration error, and a stop that gives running commands their grace.
UNIT_TEXT = """[Unit]
Description=Fleetline agent
Documentation=https://github.com/fleetline/fleetline
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={exec_start}
Restart=always
RestartSec=5
RestartPreventExitStatus=2
KillMode=mixed
TimeoutStopSec=30
StateDirectory=fleetline-agent
StateDirectoryMode=0700
LimitCORE=0
KeyringMode=private
OOMScoreAdjust=-500

[Install]
WantedBy=multi-user.target
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleetline-agent install", allow_abbrev=False,
        description="Install this release with its launcher; any other option is the agent's own "
                    "(--server, --root-key-sha256, --label, ...) and is given to it at every start.")
    p.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX, help=f"[{DEFAULT_PREFIX}]")
    p.add_argument("--systemd", action="store_true", help="write, enable and start a systemd unit")
    p.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"),
                   help="where --systemd writes the unit [/etc/systemd/system]")
    p.add_argument("--no-start", action="store_true", help="with --systemd: write the unit, do not enable it")
    p.add_argument("--registration-token-file", help="copied to PREFIX/registration-token (0600)")
    return p


def _this_file() -> Path:
    """The .pyz being run (pex names it in PEX)."""
    path = os.environ.get("PEX") or sys.argv[0]
    if not path.endswith(".pyz") or not Path(path).is_file():
        raise SystemExit("[ERROR] [agent] [install] not_a_release hint=\"run install from the .pyz file "
                         "(python3 fleetline-agent-<version>-<platform>.pyz install)\"")
    return Path(path)


def _write(path: Path, data: bytes, mode: int) -> None:
    """A file that is not a secret (the launcher, the unit), replaced in one step."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install(source: Path, layout: Layout, python: str) -> None:
    """The release, the launcher and `current`: a release already there is kept (an
    install again of the running version changes nothing under it)."""
    release = layout.release_dir(__version__)
    if not (release / PYZ).is_file():
        staging = layout.releases / f".staging-{__version__}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copyfile(source, staging / PYZ)
        os.replace(staging, release)
    layout.launcher.parent.mkdir(parents=True, exist_ok=True)
    code = pkgutil.get_data("agent", "launcher.py")
    assert code is not None
    _write(layout.launcher, f"#!{python}\n".encode() + code, 0o755)
    layout.switch(__version__)


def main(argv: List[str]) -> int:
    args, agent_args = _parser().parse_known_args(argv)
    from agent.cli import build_parser  # the agent's own flags, checked before anything is written

    checked = build_parser().parse_args(agent_args)
    if checked.registration_token_file:
        raise SystemExit("[ERROR] [agent] [install] bad_option hint=\"give --registration-token-file to install "
                         "itself, before the agent's options\"")
    prefix = args.prefix.resolve()
    layout = Layout(prefix)
    layout.releases.mkdir(parents=True, exist_ok=True)
    os.chmod(prefix, 0o755)
    install(_this_file(), layout, sys.executable)
    token = None
    if args.registration_token_file:
        token = Path(args.registration_token_file).read_text().strip()
    elif os.environ.get("FLEETLINE_AGENT_REGISTRATION_TOKEN"):
        token = os.environ["FLEETLINE_AGENT_REGISTRATION_TOKEN"].strip()
    if token:  # a secret: written as every secret Fleetline keeps
        write_private(prefix / "registration-token", token + "\n")
        agent_args = [*agent_args, "--registration-token-file", str(prefix / "registration-token")]
    print(f"[INFO] [agent] [install] installed version={__version__} prefix={prefix}", file=sys.stderr)
    if args.systemd:
        return _systemd(args, layout, agent_args)
    print(f"[INFO] [agent] [install] run command=\"{shlex.join([str(layout.launcher), *agent_args])}\"",
          file=sys.stderr)
    return 0


def unit_text(layout: Layout, agent_args: List[str]) -> str:
    if not any(a == "--state-dir" or a.startswith("--state-dir=") for a in agent_args):
        agent_args = [*agent_args, "--state-dir", "/var/lib/fleetline-agent"]
    return UNIT_TEXT.format(exec_start=shlex.join([str(layout.launcher), *agent_args]))


def _systemd(args: argparse.Namespace, layout: Layout, agent_args: List[str]) -> int:
    args.unit_dir.mkdir(parents=True, exist_ok=True)
    unit = args.unit_dir / UNIT
    _write(unit, unit_text(layout, agent_args).encode(), 0o644)
    print(f"[INFO] [agent] [install] unit_written unit={unit}", file=sys.stderr)
    if args.no_start:
        return 0
    for step in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", UNIT]):
        done = subprocess.run(step, check=False)
        if done.returncode != 0:
            print(f"[ERROR] [agent] [install] systemctl_failed step=\"{' '.join(step)}\" "
                  f"exit_code={done.returncode}", file=sys.stderr)
            return 1
    return 0

