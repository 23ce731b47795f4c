"""`fleetline-agent`: its flags (each with a FLEETLINE_AGENT_* variable), checked before
anything starts; a bad one stops it with one line saying what to give instead."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from agent import __version__, handlers, trust
from agent.config import LONG_POLL_WAIT_S, Config
from agent.facts import DEFAULT_DIR as DEFAULT_FACTS_DIR
from agent.log import Log
from agent.main import Agent
from agent.stopper import Stopper
from fleetline.labels import split_label
from fleetline.transport import InsecureTransport, check_url, is_loopback_url

log = Log()


def _env(name: str) -> Optional[str]:
    value = os.environ.get(name)
    if not value and os.environ.get(name + "_FILE"):
        value = _read_secret(name + "_FILE", os.environ[name + "_FILE"])
    return value or None


def _read_secret(what: str, path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SystemExit(f"[ERROR] [agent] [config] unreadable_file setting={what} error=\"{exc.strerror}\"") from None


def _flag(name: str) -> bool:
    return (_env(name) or "").lower() in ("1", "true", "yes")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleetline-agent", description="The Fleetline agent", allow_abbrev=False,
        epilog="The registration token is a secret: give it as FLEETLINE_AGENT_REGISTRATION_TOKEN, "
               "or in a file (--registration-token-file or FLEETLINE_AGENT_REGISTRATION_TOKEN_FILE), "
               "never on the command line, where every local user can read it.")
    p.add_argument("--server", default=_env("FLEETLINE_AGENT_SERVER"), help="[FLEETLINE_AGENT_SERVER]")
    p.add_argument("--registration-token-file", help="a file holding the registration token (read again "
                   "before every registration)")
    p.add_argument("--state-dir", type=Path,
                   default=Path(_env("FLEETLINE_AGENT_STATE_DIR") or "/var/lib/fleetline-agent"))
    p.add_argument("--machine-id", default=_env("FLEETLINE_AGENT_MACHINE_ID"))
    p.add_argument("--allow-shell", action="store_true", default=_flag("FLEETLINE_AGENT_ALLOW_SHELL"))
    p.add_argument("--ca-file", default=_env("FLEETLINE_AGENT_CA_FILE"),
                   help="the CA that signed the gateway's certificate [the system trust store] "
                        "[FLEETLINE_AGENT_CA_FILE]")
    p.add_argument("--insecure-http", action="store_true", default=_flag("FLEETLINE_AGENT_INSECURE_HTTP"),
                   help="allow plain http:// to a non-loopback server (credentials cross the network "
                        "readable) [FLEETLINE_AGENT_INSECURE_HTTP]")
    p.add_argument("--root-key-file", default=_env("FLEETLINE_AGENT_ROOT_KEY_FILE"),
                   help="the command-signing root public key to pin (base64url, from `fleetline keys root`) "
                        "[FLEETLINE_AGENT_ROOT_KEY_FILE]")
    p.add_argument("--root-key-sha256", default=_env("FLEETLINE_AGENT_ROOT_KEY_SHA256"),
                   help="the SHA-256 (hex) of the root key the registration answer must offer, printed "
                        "with every registration token [FLEETLINE_AGENT_ROOT_KEY_SHA256]")
    p.add_argument("--max-parallel", type=int, default=int(_env("FLEETLINE_AGENT_MAX_PARALLEL") or 4),
                   help="commands run at once [FLEETLINE_AGENT_MAX_PARALLEL, 4]")
    p.add_argument("--poll-wait", type=int, default=int(_env("FLEETLINE_AGENT_POLL_WAIT_S") or LONG_POLL_WAIT_S),
                   help="seconds a poll asks the server to hold it, at most the server's FLEETLINE_MAX_WAIT_S "
                        "[FLEETLINE_AGENT_POLL_WAIT_S, 55]")
    p.add_argument("--no-long-poll", action="store_true", default=_flag("FLEETLINE_AGENT_NO_LONG_POLL"),
                   help="poll at the server's interval instead of holding a poll open")
    p.add_argument("--label", action="append", metavar="KEY=VALUE",
                   help="a label sent at registration, for jobs to select by (repeatable) "
                        "[FLEETLINE_AGENT_LABELS, comma-separated]")
    p.add_argument("--facts-dir", type=Path, default=Path(_env("FLEETLINE_AGENT_FACTS_DIR") or DEFAULT_FACTS_DIR),
                   help="*.json files reported as custom facts, under custom.<file stem> "
                        f"[FLEETLINE_AGENT_FACTS_DIR, {DEFAULT_FACTS_DIR}]")
    p.add_argument("--log-level", default=_env("FLEETLINE_AGENT_LOG_LEVEL") or "INFO")
    p.add_argument("--version", action="version", version=f"fleetline-agent {__version__}")
    return p


def parse_labels(pairs: List[str]) -> Dict[str, str]:
    """KEY=VALUE pairs as the labels object; ValueError names a pair that is not one."""
    labels = {}
    for pair in pairs:
        key, value = split_label(pair.strip())
        labels[key.strip()] = value.strip()
    return labels


def _token_source(token_file: Optional[str]) -> Callable[[], Optional[str]]:
    """The registration token as it is now: the file read again each time (an operator may
    replace it), else the environment."""
    if token_file:
        def from_file() -> Optional[str]:
            try:
                return Path(token_file).read_text().strip() or None
            except OSError as exc:
                log.error("config", "unreadable_file", setting="--registration-token-file", error=exc.strerror)
                return None
        return from_file
    return lambda: _env("FLEETLINE_AGENT_REGISTRATION_TOKEN")


def _fingerprint(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    value = value.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("--root-key-sha256 must be 64 hex digits (the SHA-256 of the raw root key)")
    return value


def _config(args: argparse.Namespace) -> Optional[Config]:
    """The configuration the flags describe, or None once a bad one has been named."""
    if not args.server:
        log.error("config", "no_server", hint="pass --server URL or set FLEETLINE_AGENT_SERVER")
        return None
    try:
        check_url(args.server, allow_plaintext=args.insecure_http)
    except InsecureTransport as exc:
        log.error("config", "insecure_server", server=args.server, reason=exc,
                  hint="use https:// with --ca-file, or --insecure-http on a network you trust")
        return None
    if args.server.startswith("http://") and not is_loopback_url(args.server):
        log.warning("config", "plaintext_http_allowed", server=args.server,
                    hint="tokens, commands and outputs cross the network readable")
    if not 1 <= args.poll_wait <= 300:
        log.error("config", "bad_poll_wait", value=args.poll_wait,
                  hint="1 to 300, at most the server's FLEETLINE_MAX_WAIT_S")
        return None
    if not 1 <= args.max_parallel <= 64:
        log.error("config", "bad_max_parallel", value=args.max_parallel, hint="1 to 64")
        return None
    if args.ca_file and not Path(args.ca_file).is_file():
        log.error("config", "bad_ca_file", file=args.ca_file, hint="a PEM file of CA certificates")
        return None
    root_key = _read_secret("--root-key-file", args.root_key_file) if args.root_key_file else None
    try:
        labels = parse_labels(args.label if args.label is not None
                              else [p for p in (_env("FLEETLINE_AGENT_LABELS") or "").split(",") if p.strip()])
    except ValueError as exc:
        log.error("config", "bad_label", value=str(exc), hint="KEY=VALUE")
        return None
    try:
        fingerprint = _fingerprint(args.root_key_sha256)
    except ValueError as exc:
        log.error("config", "bad_root_key_sha256", reason=exc)
        return None
    return Config(server=args.server, state_dir=args.state_dir, machine_id=args.machine_id,
                  registration_token=_token_source(args.registration_token_file),
                  allow_shell=args.allow_shell, max_parallel=args.max_parallel,
                  long_poll=not args.no_long_poll, poll_wait_s=args.poll_wait, labels=labels,
                  root_key=root_key, root_key_sha256=fingerprint, ca_file=args.ca_file,
                  facts_dir=args.facts_dir)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["install"]:  # python3 fleetline-agent-….pyz install --prefix DIR [--systemd]
        from agent import install

        return install.main(argv[1:])
    args = build_parser().parse_args(argv)
    log.configure(args.log_level)
    config = _config(args)
    if config is None:
        return 2
    # Everything the agent writes (state, journal) is its own: 0600 files, 0700 directories.
    # Commands get the operator's usual umask back (handlers pass it to their processes).
    handlers.COMMAND_UMASK = os.umask(0o077)
    stopper = Stopper()
    stopper.install()
    try:
        agent = Agent(config, stopper)
    except trust.Untrusted as exc:
        log.error("config", "bad_root_key", file=args.root_key_file, reason=exc)
        return 2
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
