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
from dataclasses import dataclass, field
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
from agent.streaming import OutputStream, StreamEnded
from agent.timing import BACKOFF_CAP_S, Backoff, poll_jitter
from fleetline.labels import split_label
from fleetline.transport import InsecureTransport, check_url, is_loopback_url

LONG_POLL_WAIT_S = 55  # the default hold: within the server's default longest wait (60 s)
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


@dataclass(frozen=True)
class Config:
    """What the agent was told at start (flags or FLEETLINE_AGENT_* variables)."""
    server: str
    state_dir: Path
    machine_id: str | None = None
    # The registration token as it is now: read again before every registration, so an
    # operator can hand a waiting agent a new one by rewriting its file.
    registration_token: Callable[[], str | None] = lambda: None
    allow_shell: bool = False
    max_parallel: int = 4
    long_poll: bool = True
    poll_wait_s: int = LONG_POLL_WAIT_S  # how long a poll asks to be held (the server's FLEETLINE_MAX_WAIT_S caps it)
    labels: dict[str, str] = field(default_factory=dict)
    root_key: str | None = None  # base64url, from --root-key-file
    root_key_sha256: str | None = None
    ca_file: str | None = None


class Agent:
    def __init__(self, config: Config, stopper: Stopper):
        secure_dir(config.state_dir)
        self.config = config
        self.labels = config.labels
        self.stopper = stopper
        self.allow_shell = config.allow_shell
        self.long_poll = config.long_poll
        self.poll_wait_s = config.poll_wait_s
        self.machine_id = resolve_machine_id(config.machine_id, config.state_dir)
        self.creds = Credentials(config.state_dir)
        self.journal = Journal(config.state_dir / "journal.sqlite3")
        self.client = Client(config.server, self.machine_id, ca_file=config.ca_file)
        self.backoff = Backoff()
        self.slots = Slots(config.max_parallel, stopper)
        self.interval = 0.0
        self.fatal: Fatal | None = None  # set by a command thread that must stop the agent
        # Renewal and registration one at a time, whichever thread needs fresh credentials.
        self._auth_lock = threading.Lock()
        # What signs commands we run: a root pinned from a file (else at registration, never
        # blindly: trust.first_use_pin) and the keyset it vouches for.
        self.root = trust.public_key(config.root_key) if config.root_key else None
        self.keyset: trust.Keyset | None = None
        self._trust_lock = threading.Lock()

    # --- credentials --------------------------------------------------------------------

    def _register(self, previous: str | None = None) -> None:
        """Register (again), until the server lets this machine in. A machine the server
        says is enrolled (409), or a token refused after that, waits for an operator: it
        logs what to do (`previous`: the agent it was) and tries again at the longest backoff,
        at once when its registration token file changes. The answer's root key is checked before anything
        is kept: an untrusted answer leaves no credentials behind."""
        facts = {"hostname": socket.gethostname()[:255] or "unknown", "os": platform.system().lower(),
                 "arch": platform.machine(), "agent_version": __version__, "labels": self.labels}
        backoff = Backoff()
        waiting_for_operator = False
        while True:
            token = self.config.registration_token()
            if not token:
                raise Fatal("not registered and no registration token configured "
                            "(FLEETLINE_AGENT_REGISTRATION_TOKEN or --registration-token-file)")
            try:
                body = self.client.register(token, facts)
                break
            except Retryable as exc:
                self._back_off("registration", exc, backoff)
            except Unauthorized:
                if not waiting_for_operator:
                    raise Fatal("the registration token was refused (unknown, expired, revoked or used up)") from None
                log.error("auth", "registration_token_refused", machine_id=self.machine_id,
                          hint="give this agent a new registration token; its file is read again "
                               "before every attempt")
                self._wait_for_operator(token)
            except Refused as exc:
                if exc.status != 409:
                    raise Fatal(f"registration refused: {exc.detail} ({exc.code})") from None
                waiting_for_operator = True
                log.error("auth", "registration_conflict", machine_id=self.machine_id,
                          enrolled_agent_id=previous or "unknown",
                          hint="this machine is enrolled as another agent; an operator must revoke it "
                               "(fleetline agents revoke ID), then give this agent a registration "
                               "token if its own is used up")
                self._wait_for_operator(token)
            if self.stopper.stopping:
                raise Fatal("stopped before registration completed")
        pinned = self._trust_registration(body)
        self.creds.save(**pinned, agent_id=body["agent_id"], machine_id=self.machine_id,
                        access_token=body["access_token"], access_token_expires_at=body["access_token_expires_at"],
                        refresh_token=body["refresh_token"], refresh_token_expires_at=body["refresh_token_expires_at"])
        self.interval = float(body.get("poll_interval_s", 300))
        log.info("auth", "agent_registered", agent_id=body["agent_id"], machine_id=self.machine_id)
        if body.get("command_keyset"):
            self._accept_keyset(body["command_keyset"])

    def _wait_for_operator(self, token: str) -> None:
        """The longest backoff, cut short when the registration token changes."""
        deadline = time.monotonic() + BACKOFF_CAP_S
        log.info("auth", "waiting_for_operator", next_retry_in=f"{BACKOFF_CAP_S:.0f}s")
        while time.monotonic() < deadline and self.stopper.sleep(1.0):
            if self.config.registration_token() != token:
                log.info("auth", "registration_token_changed", action="register_now")
                return

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
                if not self.config.registration_token():
                    raise Fatal("the refresh token was refused and no registration token is configured "
                                "to register again") from None
                log.warning("auth", "refresh_refused", reason=exc.code, action="register_again")
                previous = self.creds.data.get("agent_id")
                self.creds.clear()
                self._register(previous)
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

    def _trust_registration(self, body: dict) -> dict:
        """Pin the root key the registration answer offers, if nothing is pinned yet and the
        answer is vouched for (trust.first_use_pin); otherwise stop before keeping anything.
        Returns what to keep beside the credentials (written with them, in one write)."""
        offered = body.get("root_public_key")
        if self.root is not None:
            if isinstance(offered, str) and trust.public_key(offered) != self.root:
                log.warning("trust", "root_key_differs", hint="the server offers another root key than "
                            "the one pinned; commands it signs will be rejected")
            return {}
        server = self.config.server
        try:
            source = trust.first_use_pin(offered, self.config.root_key_sha256,
                                         verified_tls=server.startswith("https://"),
                                         loopback=is_loopback_url(server))
        except trust.Untrusted as exc:
            raise Fatal(f"no command-signing root key can be trusted: {exc}") from None
        self.root = trust.public_key(offered)
        if source == "fingerprint":
            log.info("trust", "root_key_pinned", source=source, sha256=trust.fingerprint(offered))
        else:
            log.warning("trust", "root_key_pinned", source=source, sha256=trust.fingerprint(offered),
                        hint="pin it beforehand with --root-key-sha256 or --root-key-file")
        return {"root_public_key": offered}

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
        delay = backoff.next_delay(exc.retry_after, exc.rate_limited)
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
                if self.root is None:
                    raise Fatal("no command-signing root key is pinned: give --root-key-file or "
                                "--root-key-sha256 (the state file holds credentials but no root)")
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
        except Exception as exc:  # a bug: said once, with its traceback, and a non-zero exit
            log.error("lifecycle", "agent_crashed", error=exc, exc_info=exc)
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
            wait = self.poll_wait_s if self.long_poll else 0
            try:
                body = self._poll(free, wait)
            except Retryable as exc:
                self._back_off("polling", exc, self.backoff)
                jitter_next = True
                continue
            except Refused as exc:
                if exc.status == 400 and "wait" in exc.detail and self.poll_wait_s > LONG_POLL_WAIT_S:
                    # Longer than this server allows (FLEETLINE_MAX_WAIT_S): its default, at once.
                    log.warning("polling", "poll_wait_refused", asked=self.poll_wait_s, now=LONG_POLL_WAIT_S,
                                hint="lower --poll-wait, or raise the server's FLEETLINE_MAX_WAIT_S")
                    self.poll_wait_s = LONG_POLL_WAIT_S
                    continue
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
        except Exception as exc:  # a bug: the journal keeps where the command was
            log.error("commands", "command_handling_failed", command_id=command.get("id"), error=exc,
                      exc_info=exc)

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
        # Who asked for it (and who approved it), as the signature vouches: the agent's own
        # record of every command it runs, whatever the server's history later says.
        log.info("commands", "command_started", command_id=command_id, type=ctype,
                 issued_by=payload.get("issued_by"), approved_by=",".join(payload.get("approved_by") or []) or None)
        stream = OutputStream(command_id, lambda offset, data: self._send_output(command_id, offset, data),
                              retryable=(Retryable,), log=log)
        ctx = handlers.Context(self.stopper, time.monotonic() + float(payload["run_timeout_s"]),
                               self.allow_shell, output=stream.feed)
        try:
            outcome = handlers.run(ctype, payload["params"], ctx)
        finally:
            stream.close()  # what is still waiting goes once, now: then the result
        result = self._result(outcome, started_at)
        self.journal.finish(command_id, result)
        log.info("commands", "command_finished", command_id=command_id, status=outcome.status,
                 exit_code=outcome.exit_code)
        self._report(command_id, result)

    def _send_output(self, command_id: str, offset: int, data: str) -> dict:
        """One chunk of live output; Retryable goes to the stream (it retries while the
        command runs), anything final ends the stream."""
        try:
            return self._authed(lambda t, a: self.client.output(t, a, command_id, offset, data))
        except (Refused, Fatal) as exc:
            raise StreamEnded(str(exc)) from None

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
    p.add_argument("--log-level", default=_env("FLEETLINE_AGENT_LOG_LEVEL") or "INFO")
    return p


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE pairs as the labels object; ValueError names a pair that is not one."""
    labels = {}
    for pair in pairs:
        key, value = split_label(pair.strip())
        labels[key.strip()] = value.strip()
    return labels


def _token_source(token_file: str | None) -> Callable[[], str | None]:
    """The registration token as it is now: the file read again each time (an operator may
    replace it), else the environment."""
    if token_file:
        def from_file() -> str | None:
            try:
                return Path(token_file).read_text().strip() or None
            except OSError as exc:
                log.error("config", "unreadable_file", setting="--registration-token-file", error=exc.strerror)
                return None
        return from_file
    return lambda: _env("FLEETLINE_AGENT_REGISTRATION_TOKEN")


def _fingerprint(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("--root-key-sha256 must be 64 hex digits (the SHA-256 of the raw root key)")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.configure(args.log_level)
    if not args.server:
        log.error("config", "no_server", hint="pass --server URL or set FLEETLINE_AGENT_SERVER")
        return 2
    try:
        check_url(args.server, allow_plaintext=args.insecure_http)
    except InsecureTransport as exc:
        log.error("config", "insecure_server", server=args.server, reason=exc,
                  hint="use https:// with --ca-file, or --insecure-http on a network you trust")
        return 2
    if args.server.startswith("http://") and not is_loopback_url(args.server):
        log.warning("config", "plaintext_http_allowed", server=args.server,
                    hint="tokens, commands and outputs cross the network readable")
    if not 1 <= args.poll_wait <= 300:
        log.error("config", "bad_poll_wait", value=args.poll_wait, hint="1 to 300, at most the server's FLEETLINE_MAX_WAIT_S")
        return 2
    if not 1 <= args.max_parallel <= 64:
        log.error("config", "bad_max_parallel", value=args.max_parallel, hint="1 to 64")
        return 2
    if args.ca_file and not Path(args.ca_file).is_file():
        log.error("config", "bad_ca_file", file=args.ca_file, hint="a PEM file of CA certificates")
        return 2
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
        fingerprint = _fingerprint(args.root_key_sha256)
    except ValueError as exc:
        log.error("config", "bad_root_key_sha256", reason=exc)
        return 2
    config = Config(server=args.server, state_dir=args.state_dir, machine_id=args.machine_id,
                    registration_token=_token_source(args.registration_token_file),
                    allow_shell=args.allow_shell, max_parallel=args.max_parallel,
                    long_poll=not args.no_long_poll, poll_wait_s=args.poll_wait, labels=labels, root_key=root_key,
                    root_key_sha256=fingerprint, ca_file=args.ca_file)
    try:
        agent = Agent(config, stopper)
    except trust.Untrusted as exc:
        log.error("config", "bad_root_key", file=args.root_key_file, reason=exc)
        return 2
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
