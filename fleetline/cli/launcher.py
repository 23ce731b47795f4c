"""`fleetline up`: run the fleet locally until SIGINT/SIGTERM, then stop every child and
the embedded database (within 10 s), leaving nothing running. Meanwhile it supervises:
a child that dies is restarted on the same address with backoff; a crash loop (5
restarts of one child within 60 s) stops everything with exit 1 and one ERROR line."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from fleetline import ethos
from fleetline.cli.restarts import LOOP_RESTARTS, LOOP_WINDOW_S
from fleetline.cli.stack import Stack
from fleetline.ethos import Log

_log = Log("launcher", "up")

NEXT_STEPS = """\
Open the console at {console} and sign in as "admin" with the password in {password_file}.
Or from the command line (the bootstrap admin token is read from the data directory):
  .venv/bin/fleetline agents list
  .venv/bin/fleetline commands send --agent <AGENT_ID> --type ping --wait
  .venv/bin/fleetline jobs run --label env=demo --type ping --max-in-flight 1 --wait
Stop with Ctrl-C."""

TLS_STEPS = """\
The gateway serves HTTPS with a certificate from a local CA: {ca_file}
Give it to the CLI and to agents on other machines:
  FLEETLINE_URL={url} FLEETLINE_CA_FILE={ca_file} .venv/bin/fleetline agents list
and import it into your browser to open the console without a warning."""


def add_parser(sub) -> None:
    p = sub.add_parser("up", help="run the fleet locally on an embedded PostgreSQL")
    p.add_argument("--data-dir", default=".fleetline", type=Path)
    p.add_argument("--port", type=int, default=8080, help="the gateway's port")
    p.add_argument("--dispatch-replicas", type=int, default=1)
    p.add_argument("--agents", type=int, default=0, help="demo agents to start")
    p.add_argument("--host", default="127.0.0.1",
                   help="where the gateway listens (a non-loopback address implies --tls) [127.0.0.1]")
    p.add_argument("--tls", action="store_true",
                   help="serve HTTPS with a certificate from a local CA made in DATA_DIR/tls (agents and "
                        "the CLI are given its ca.pem)")
    p.add_argument("--agent-release", type=Path, metavar="PYZ",
                   help="install the demo agents from this release (make agent-release) and run them by its "
                        "launcher, so they can be upgraded (fleetline agents upgrade)")
    p.add_argument("--hints", action="store_true", help="print what to try next once ready")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ethos.configure("INFO")
    # The handler only records the signal: taking a lock in a handler (Event.set) can
    # deadlock against the interrupted main thread holding the same lock.
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    stack = Stack(args.data_dir, port=args.port, dispatch_replicas=max(1, args.dispatch_replicas),
                  agents=max(0, args.agents), host=args.host, tls=args.tls,
                  agent_release=args.agent_release.resolve() if args.agent_release else None)
    try:
        stack.start()
    except Exception as exc:
        _log.error("start_failed", error=exc, logs=stack.data_dir / "logs")
        return 1
    print(stack.ready_line(), flush=True)
    # Ready means the services answer; demo agents start after (starting a few hundred
    # Python processes takes a while on a small machine) and enrol while the user looks.
    try:
        stack.start_agents()
    except Exception as exc:
        _log.error("start_failed", error=exc, logs=stack.data_dir / "logs")
        stack.stop()
        return 1
    if args.hints:
        print(NEXT_STEPS.format(console=f"{stack.gateway_url}/console/",
                                password_file=stack.data_dir / "admin-password"), flush=True)
        if stack.ca_file:
            print(TLS_STEPS.format(ca_file=stack.ca_file, url=stack.gateway_url), flush=True)
    code = 0
    while not received:
        time.sleep(0.2)
        looping = stack.supervise()
        if looping:
            _log.error("crash_loop", child=looping, restarts=LOOP_RESTARTS, window=f"{LOOP_WINDOW_S:.0f}s",
                       logs=stack.data_dir / "logs")
            code = 1
            break
    _log.info("stopping")
    stack.stop()
    _log.info("stopped")
    return code

