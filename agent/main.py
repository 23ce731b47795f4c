"""`fleetline-agent`: register once, then hold a long poll, run what arrives, report; forever,
politely.

Order for each command, in its own worker thread: journal `received` -> ack (just before
it starts) -> journal `running` (on disk) -> run -> journal `done` with the result ->
report until the server accepts it. A command the journal already knows is never run
again on this machine. The poll claims only as many commands as there are free slots
(`--max-parallel`), so nothing waits unacked behind a long command.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from agent import __version__, handlers, trust
from agent.client import Client, Refused, Retryable, Unauthorized
from agent.journal import Journal
from agent.log import Log
from agent.results import fit_output
from agent.state import Credentials, resolve_machine_id, secure_dir
from agent.stopper import Stopper
from agent.timing import Backoff, poll_jitter
from fleetline.labels import split_label

LONG_POLL_WAIT_S = 55  # below the gateway's upstream timeout (30 s + wait)
RENEW_BEFORE_S = 60  # renew an access token this long before it expires
FATAL_CODES = {"agent_revoked", "machine_mismatch"}

log = Log()


class Fatal(Exception):
    """Stop the agent with one clear line and a non-zero exit."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _expires_soon(stamp: str | None) -> bool:
    if not stamp:
        return True
    try:
        expires = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return True
    return expires - time.time() < RENEW_BEFORE_S


class Slots:
    """How many commands may run at once; a finished one wakes the poll loop."""

    def __init__(self, size: int, stopper: Stopper):
        self.size, self.stopper = size, stopper
        self._busy = 0
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def free(self) -> int:
        with self._lock:
            return self.size - self._busy

    def run(self, name: str, work: Callable[[], None]) -> None:
        def body() -> None:
            try:
                work()
            finally:
                with self._lock:
                    self._busy -= 1
                self.stopper.wake()

        with self._lock:
            self._busy += 1
        thread = threading.Thread(target=body, name=name, daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class Agent:
    def __init__(self, server: str, state_dir: Path, registration_token: str | None,
                 machine_id: str | None, allow_shell: bool, stopper: Stopper,
                 max_parallel: int = 4, long_poll: bool = True, root_key: str | None = None,
                 labels: dict[str, str] | None = None):
        secure_dir(state_dir)
        self.labels = labels or {}
        self.stopper = stopper
        self.registration_token = registration_token
        self.allow_shell = allow_shell
        self.long_poll = long_poll
        self.machine_id = resolve_machine_id(machine_id, state_dir)
        self.creds = Credentials(state_dir)
        self.journal = Journal(state_dir / "journal.sqlite3")
        self.client = Client(server, self.machine_id)
        self.backoff = Backoff()
        self.slots = Slots(max_parallel, stopper)
        self.interval = 0.0
        self.fatal: Fatal | None = None  # set by a command thread that must stop the agent
        # Renewal and registration one at a time, whichever thread needs fresh credentials.
        self._auth_lock = threading.Lock()
        # What signs commands we run: a root pinned from a file (else on first use) and the
        # keyset it vouches for.
        self.configured_root = root_key
        self.root = trust.public_key(root_key) if root_key else None
        self.keyset: trust.Keyset | None = None
        self._trust_lock = threading.Lock()

    # --- credentials --------------------------------------------------------------------

    def _register(self) -> None:
        if not self.registration_token:
            raise Fatal("not registered and no registration token configured "
                        "(FLEETLINE_AGENT_REGISTRATION_TOKEN or --registration-token-file)")
        facts = {"hostname": socket.gethostname()[:255] or "unknown", "os": platform.system().lower(),
                 "arch": platform.machine(), "agent_version": __version__, "labels": self.labels}
        backoff = Backoff()
        while True:
            try:
                body = self.client.register(self.registration_token, facts)
                break
            except Retryable as exc:
                self._back_off("registration", exc, backoff)
                if self.stopper.stopping:
                    raise Fatal("stopped before registration completed") from None
            except Unauthorized:
                raise Fatal("the registration token was refused (unknown, expired, revoked or used up)") from None
            except Refused as exc:
                raise Fatal(f"registration refused: {exc.detail} ({exc.code})") from None
        self.creds.save(agent_id=body["agent_id"], machine_id=self.machine_id,
                        access_token=body["access_token"], access_token_expires_at=body["access_token_expires_at"],
                        refresh_token=body["refresh_token"], refresh_token_expires_at=body["refresh_token_expires_at"])
        self.interval = float(body.get("poll_interval_s", 300))
        log.info("auth", "agent_registered", agent_id=body["agent_id"], machine_id=self.machine_id)
        self._trust_registration(body)

    def _renew_or_reregister(self, stale_token: str | None) -> None:
        """Fresh credentials, unless another thread got them since `stale_token` failed."""
        with self._auth_lock:
            if stale_token is not None and self.creds.data.get("access_token") != stale_token:
                return
            try:
                body = self.client.renew(self.creds.data["agent_id"], self.creds.data["refresh_token"])
            except Unauthorized as exc:
                if exc.code == "token_reused":
                    # Someone else renewed with a copy of our token: the server revoked them all.
                    log.error("auth", "refresh_token_reused", agent_id=self.creds.data["agent_id"],
                              hint="the refresh token was used elsewhere; its family is revoked")
                if not self.registration_token:
                    raise Fatal("the refresh token was refused and no registration token is configured "
                                "to register again") from None
                log.warning("auth", "refresh_refused", reason=exc.code, action="register_again")
                self.creds.clear()
                self._register()
                return
            except Refused as exc:
                raise Fatal(self._fatal_text(exc)) from None
            # The new refresh token is on disk (atomically, 0600, fsynced) before it is used:
            # a crash now leaves the old one, which the server's grace still accepts.
            self.creds.save(access_token=body["access_token"],
                            access_token_expires_at=body["access_token_expires_at"],
                            refresh_token=body.get("refresh_token", self.creds.data["refresh_token"]),
                            refresh_token_expires_at=body["refresh_token_expires_at"])
            log.info("auth", "token_renewed", agent_id=self.creds.data["agent_id"])

    def _fatal_text(self, exc: Refused) -> str:
        if exc.code == "agent_revoked":
            return "this agent has been revoked by an operator; re-enrol it with a new registration token"
        if exc.code == "machine_mismatch":
            return f"the server says this is not the machine the agent registered as (machine_id={self.machine_id})"
        return f"the server refused: {exc.detail} ({exc.code})"

    def _authed(self, call: Callable[[str, str], dict]) -> dict:
        """Run `call(token, agent_id)`; on 401 renew once and retry."""
        token = self.creds.data.get("access_token")
        if _expires_soon(self.creds.data.get("access_token_expires_at")):
            self._renew_or_reregister(token)
        for attempt in (1, 2):
            token = self.creds.data["access_token"]
            try:
                return call(token, self.creds.data["agent_id"])
            except Unauthorized:
                if attempt == 2:
                    raise Fatal("the server refused fresh credentials") from None
                self._renew_or_reregister(token)
            except Refused as exc:
                if exc.code in FATAL_CODES:
                    raise Fatal(self._fatal_text(exc)) from None
                raise
        raise AssertionError("unreachable")

    # --- trust (agent/trust.py) -------------------------------------------------------------

    def _load_trust(self) -> None:
        """The pinned root and the keyset held, from the state file (checked again)."""
        if self.root is None and self.creds.data.get("root_public_key"):
            self.root = trust.public_key(self.creds.data["root_public_key"])
        document = self.creds.data.get("command_keyset")
        if self.root is not None and document:
            try:
                self.keyset = trust.read_keyset(self.root, document)
            except trust.Untrusted as exc:
                log.warning("trust", "keyset_not_usable", reason=exc)

    def _trust_registration(self, body: dict) -> None:
        offered = body.get("root_public_key")
        if self.root is None and isinstance(offered, str):
            try:
                self.root = trust.public_key(offered)
            except trust.Untrusted as exc:
                log.error("trust", "root_key_refused", reason=exc)
                return
            self.creds.save(root_public_key=offered)
            log.warning("trust", "root_key_pinned", source="first_registration", root_key=offered,
                        hint="pin it beforehand with --root-key-file")
        if body.get("command_keyset"):
            self._accept_keyset(body["command_keyset"])

    def _accept_keyset(self, document: object) -> None:
        if self.root is None:
            return
        with self._trust_lock:
            held = self.keyset.version if self.keyset else 0
            try:
                self.keyset = trust.read_keyset(self.root, document, held)
            except trust.Untrusted as exc:
                log.warning("trust", "keyset_refused", reason=exc)
                return
            self.creds.save(command_keyset=document)
            log.info("trust", "keyset_accepted", version=self.keyset.version, keys=len(self.keyset.keys))

    def _signed_payload(self, command: dict) -> dict:
        """The verified payload of a command (fetching the keyset once on an unknown key),
        or trust.Untrusted with the reason it must not run."""
        try:
            return trust.verify_command(self.keyset, command, self.creds.data["agent_id"])
        except trust.UnknownKey:
            try:
                self._accept_keyset(self._authed(lambda t, a: self.client.keyset(t)))
            except (Retryable, Refused) as exc:
                log.warning("trust", "keyset_fetch_failed", reason=exc)
            return trust.verify_command(self.keyset, command, self.creds.data["agent_id"])

    def _reject(self, command_id: str, ctype: str, reason: str) -> None:
        """Refused, never run: no ack; the server hears `rejected` and why."""
        log.warning("trust", "command_rejected", command_id=command_id, reason=reason)
        self.journal.receive(command_id, ctype)
        result = {"status": "rejected", "exit_code": None, "output": fit_output(f"rejected: {reason}"),
                  "started_at": None, "finished_at": _now()}
        self.journal.finish(command_id, result)
        self._report(command_id, result)

    # --- the loop -------------------------------------------------------------------------

    def _back_off(self, subsystem: str, exc: Retryable, backoff: Backoff) -> None:
        delay = backoff.next_delay(exc.retry_after)
        log.warning(subsystem, "server_unavailable", attempt=backoff.attempt,
                    next_retry_in=f"{delay:.0f}s", reason=exc)
        self.stopper.sleep(delay)

    def run(self) -> int:
        code = 0
        try:
            with self._auth_lock:
                loaded = self.creds.load()
                self._load_trust()
                if not loaded or self.creds.data.get("machine_id") != self.machine_id:
                    self._register()
            log.info("lifecycle", "agent_started", agent_id=self.creds.data["agent_id"],
                     machine_id=self.machine_id, version=__version__, long_poll=self.long_poll,
                     max_parallel=self.slots.size)
            self._recover()
            self._loop()
            if self.fatal is not None:
                raise self.fatal
        except Fatal as exc:
            log.error("lifecycle", "agent_stopped", reason=exc)
            code = 1
        finally:
            self.stopper.stop()  # command threads wind down within their grace
            self.slots.join(handlers.GRACE_S + 5)
            self.journal.close()
        if code == 0:
            log.info("lifecycle", "agent_stopped", reason="signal")
        return code

    def _loop(self) -> None:
        jitter_next = True  # before the first poll and after every failure
        while not self.stopper.stopping:
            if (jitter_next or not self.long_poll) and not self.stopper.sleep(
                    poll_jitter(self.interval, self.backoff.rng)):
                break
            free = self._wait_for_a_slot()
            if free == 0:
                break
            wait = LONG_POLL_WAIT_S if self.long_poll else 0
            try:
                body = self._poll(free, wait)
            except Retryable as exc:
                self._back_off("polling", exc, self.backoff)
                jitter_next = True
                continue
            except Refused as exc:
                log.error("polling", "poll_refused", status=exc.status, error=exc.code)
                self._back_off("polling", Retryable(str(exc)), self.backoff)
                jitter_next = True
                continue
            if body is None:  # stopping while the poll was held
                break
            self.backoff.reset()
            jitter_next = False
            self.interval = float(body["poll_interval_s"])
            for command in body["commands"]:
                self.slots.run(f"command-{command['id'][:8]}", lambda c=command: self._handle(c))
            if not self.long_poll and not body["commands"]:
                self.stopper.sleep(self.interval)

    def _wait_for_a_slot(self) -> int:
        while not self.stopper.stopping:
            free = self.slots.free()
            if free > 0:
                return free
            self.stopper.sleep(60, wakeable=True)  # a finishing command wakes us at once
        return 0

    def _poll(self, limit: int, wait: int) -> dict | None:
        """One poll, held in a helper thread so a stop never waits for it: on SIGTERM the
        agent exits and the closed connection tells the server to claim nothing."""
        outcome: dict = {}
        answered = threading.Event()

        def call() -> None:
            try:
                outcome["body"] = self._authed(lambda t, a: self.client.poll(t, a, limit, wait))
            except BaseException as exc:  # handed to the loop, which sorts it
                outcome["error"] = exc
            finally:
                answered.set()  # before the wake-up: the loop below checks it after waking
                self.stopper.wake()

        threading.Thread(target=call, name="poll", daemon=True).start()
        while not answered.is_set() and not self.stopper.stopping:
            self.stopper.sleep(wait + 60, wakeable=True)
        if not answered.is_set():
            return None
        if "error" in outcome:
            raise outcome["error"]
        return outcome["body"]

    def _recover(self) -> None:
        """After a crash: commands that were running are failed as interrupted (never
        re-run); results the server has not accepted yet are sent again."""
        for command_id in self.journal.interrupted():
            log.warning("commands", "command_interrupted", command_id=command_id)
            self.journal.finish(command_id, self._result(handlers.INTERRUPTED, None))
        for command_id, result in self.journal.unreported():
            self._report(command_id, result)

    def _result(self, outcome: handlers.Outcome, started_at: str | None) -> dict:
        return {"status": outcome.status, "exit_code": outcome.exit_code,
                "output": fit_output(outcome.output, outcome.note),
                "started_at": started_at, "finished_at": _now()}

    def _handle(self, command: dict) -> None:
        try:
            self._handle_one(command)
        except Fatal as exc:  # the poll loop stops, and run() says why, once
            self.fatal = self.fatal or exc
            self.stopper.stop()

    def _handle_one(self, command: dict) -> None:
        command_id, ctype = command["id"], command["type"]
        known = self.journal.status(command_id)
        if known == "done":  # redelivered: never run again, send the stored result
            log.info("commands", "command_redelivered", command_id=command_id, action="resend_result")
            self._report(command_id, self.journal.result(command_id))
            return
        if known in ("skipped", "running"):
            return
        try:
            payload = self._signed_payload(command)
        except trust.Untrusted as exc:
            self._reject(command_id, ctype, str(exc))
            return
        ctype = payload["type"]  # from here on, only what the signature covers
        self.journal.receive(command_id, ctype)
        state = self._ack(command_id)
        if state is None:
            return
        if state.get("status") != "running":
            log.info("commands", "command_not_run", command_id=command_id, status=state.get("status"))
            self.journal.skip(command_id)
            return
        self.journal.start(command_id)
        started_at = _now()
        log.info("commands", "command_started", command_id=command_id, type=ctype)
        ctx = handlers.Context(self.stopper, time.monotonic() + float(payload["run_timeout_s"]),
                               self.allow_shell)
        outcome = handlers.run(ctype, payload["params"], ctx)
        result = self._result(outcome, started_at)
        self.journal.finish(command_id, result)
        log.info("commands", "command_finished", command_id=command_id, status=outcome.status,
                 exit_code=outcome.exit_code)
        self._report(command_id, result)

    def _until_answered(self, subsystem: str, call: Callable[[str, str], dict]) -> dict | None:
        """Repeat an idempotent call (ack, result) through failures until the server answers.
        None when a stop ends the retries; a refusal (Refused) goes to the caller."""
        backoff = Backoff()
        while True:
            try:
                return self._authed(call)
            except Retryable as exc:
                if self.stopper.stopping:
                    return None
                self._back_off(subsystem, exc, backoff)
                if self.stopper.stopping:
                    return None

    def _ack(self, command_id: str) -> dict | None:
        """Repeating an ack is a no-op server-side, so a lost response costs nothing. None
        means do not run: refused (the journal skips it), or stopping (it stays `received`
        and the server redelivers it)."""
        try:
            return self._until_answered("commands", lambda t, a: self.client.ack(t, a, command_id))
        except Refused as exc:
            log.warning("commands", "ack_refused", command_id=command_id, error=exc.code)
            self.journal.skip(command_id)
            return None

    def _report(self, command_id: str, result: dict) -> None:
        """Until the server accepts it or gives a final answer; a stop leaves it unreported
        in the journal, for the next start. A 400 is our bug: it is logged, and a short
        result that says so is sent instead, so the command still ends."""
        try:
            sent = self._send_result(command_id, result)
        except Refused as exc:
            if exc.status != 400:
                log.warning("commands", "result_refused", command_id=command_id, error=exc.code)
                sent = True
            else:
                log.error("reporting", "result_refused_bug", command_id=command_id, detail=exc.detail)
                short = {**result, "status": "failed", "exit_code": None,
                         "output": fit_output(f"the agent's result was refused: {exc.detail}", limit=1024)}
                try:
                    sent = self._send_result(command_id, short)
                except Refused as again:
                    log.error("reporting", "result_refused_bug", command_id=command_id, detail=again.detail)
                    sent = True
        if sent:
            self.journal.reported(command_id)

    def _send_result(self, command_id: str, result: dict) -> bool:
        """True once the server answered; False when a stop ended the retries."""
        return self._until_answered(
            "reporting", lambda t, a: self.client.result(t, a, command_id, result)) is not None


def _env(name: str) -> str | None:
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
    p.add_argument("--registration-token-file", help="a file holding the registration token")
    p.add_argument("--state-dir", type=Path,
                   default=Path(_env("FLEETLINE_AGENT_STATE_DIR") or "/var/lib/fleetline-agent"))
    p.add_argument("--machine-id", default=_env("FLEETLINE_AGENT_MACHINE_ID"))
    p.add_argument("--allow-shell", action="store_true", default=_flag("FLEETLINE_AGENT_ALLOW_SHELL"))
    p.add_argument("--root-key-file", default=_env("FLEETLINE_AGENT_ROOT_KEY_FILE"),
                   help="the command-signing root public key to pin (base64url, from `fleetline keys root`); "
                        "without it the first registration's is pinned [FLEETLINE_AGENT_ROOT_KEY_FILE]")
    p.add_argument("--max-parallel", type=int, default=int(_env("FLEETLINE_AGENT_MAX_PARALLEL") or 4),
                   help="commands run at once [FLEETLINE_AGENT_MAX_PARALLEL, 4]")
    p.add_argument("--no-long-poll", action="store_true", default=_flag("FLEETLINE_AGENT_NO_LONG_POLL"),
                   help="poll at the server's interval instead of holding a poll open")
    p.add_argument("--label", action="append", metavar="KEY=VALUE",
                   help="a label sent at registration, for jobs to select by (repeatable) "
                        "[FLEETLINE_AGENT_LABELS, comma-separated]")
    p.add_argument("--log-level", default=_env("FLEETLINE_AGENT_LOG_LEVEL") or "INFO")
    return p


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE pairs as the labels object; ValueError names a pair that is not one."""
    labels = {}
    for pair in pairs:
        key, value = split_label(pair.strip())
        labels[key.strip()] = value.strip()
    return labels


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.configure(args.log_level)
    if not args.server:
        log.error("config", "no_server", hint="pass --server URL or set FLEETLINE_AGENT_SERVER")
        return 2
    if not 1 <= args.max_parallel <= 64:
        log.error("config", "bad_max_parallel", value=args.max_parallel, hint="1 to 64")
        return 2
    token = (_read_secret("--registration-token-file", args.registration_token_file)
             if args.registration_token_file else _env("FLEETLINE_AGENT_REGISTRATION_TOKEN"))
    # Everything the agent writes (state, journal) is its own: 0600 files, 0700 directories.
    # Commands get the operator's usual umask back (handlers pass it to their processes).
    handlers.COMMAND_UMASK = os.umask(0o077)
    stopper = Stopper()
    stopper.install()
    root_key = _read_secret("--root-key-file", args.root_key_file) if args.root_key_file else None
    try:
        labels = parse_labels(args.label if args.label is not None
                              else [p for p in (_env("FLEETLINE_AGENT_LABELS") or "").split(",") if p.strip()])
    except ValueError as exc:
        log.error("config", "bad_label", value=str(exc), hint="KEY=VALUE")
        return 2
    try:
        agent = Agent(args.server, args.state_dir, token, args.machine_id, args.allow_shell, stopper,
                      max_parallel=args.max_parallel, long_poll=not args.no_long_poll, root_key=root_key,
                      labels=labels)
    except trust.Untrusted as exc:
        log.error("config", "bad_root_key", file=args.root_key_file, reason=exc)
        return 2
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
