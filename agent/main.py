"""`fleetline-agent`: register once, then poll, ack, run, report; forever, politely.

Order for each command: journal `received` -> ack -> journal `running` (on disk) -> run ->
journal `done` with the result -> report until the server accepts it. A command the
journal already knows is never run again on this machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from agent import __version__, handlers
from agent.client import Client, Refused, Retryable, Unauthorized
from agent.journal import Journal
from agent.log import Log
from agent.state import Credentials, resolve_machine_id
from agent.stopper import Stopper
from agent.timing import Backoff, poll_jitter

POLL_LIMIT = 10
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


class Agent:
    def __init__(self, server: str, state_dir: Path, registration_token: str | None,
                 machine_id: str | None, allow_shell: bool, stopper: Stopper):
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.stopper = stopper
        self.registration_token = registration_token
        self.allow_shell = allow_shell
        self.machine_id = resolve_machine_id(machine_id, state_dir)
        self.creds = Credentials(state_dir)
        self.journal = Journal(state_dir / "journal.sqlite3")
        self.client = Client(server, self.machine_id)
        self.backoff = Backoff()
        self.interval = 0.0

    # --- credentials --------------------------------------------------------------------

    def _register(self) -> None:
        if not self.registration_token:
            raise Fatal("not registered and no registration token configured (--registration-token)")
        facts = {"hostname": socket.gethostname()[:255] or "unknown", "os": platform.system().lower(),
                 "arch": platform.machine(), "agent_version": __version__}
        while True:
            try:
                body = self.client.register(self.registration_token, facts)
                break
            except Retryable as exc:
                self._back_off("registration", exc)
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
        self.backoff.reset()
        log.info("auth", "agent_registered", agent_id=body["agent_id"], machine_id=self.machine_id)

    def _renew_or_reregister(self) -> None:
        try:
            body = self.client.renew(self.creds.data["agent_id"], self.creds.data["refresh_token"])
        except Unauthorized:
            if not self.registration_token:
                raise Fatal("the refresh token was refused and no registration token is configured "
                            "to register again") from None
            log.warning("auth", "refresh_refused", action="register_again")
            self.creds.clear()
            self._register()
            return
        except Refused as exc:
            raise Fatal(self._fatal_text(exc)) from None
        self.creds.save(access_token=body["access_token"], access_token_expires_at=body["access_token_expires_at"],
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
        if _expires_soon(self.creds.data.get("access_token_expires_at")):
            self._renew_or_reregister()
        for attempt in (1, 2):
            try:
                return call(self.creds.data["access_token"], self.creds.data["agent_id"])
            except Unauthorized:
                if attempt == 2:
                    raise Fatal("the server refused fresh credentials") from None
                self._renew_or_reregister()
            except Refused as exc:
                if exc.code in FATAL_CODES:
                    raise Fatal(self._fatal_text(exc)) from None
                raise
        raise AssertionError("unreachable")

    # --- the loop -------------------------------------------------------------------------

    def _back_off(self, subsystem: str, exc: Retryable) -> None:
        delay = self.backoff.next_delay(exc.retry_after)
        log.warning(subsystem, "server_unavailable", attempt=self.backoff.attempt,
                    next_retry_in=f"{delay:.0f}s", reason=exc)
        self.stopper.sleep(delay)

    def run(self) -> int:
        try:
            if not self.creds.load() or self.creds.data.get("machine_id") != self.machine_id:
                self._register()
            log.info("lifecycle", "agent_started", agent_id=self.creds.data["agent_id"],
                     machine_id=self.machine_id, version=__version__)
            self._recover()
            while not self.stopper.stopping:
                if not self.stopper.sleep(poll_jitter(self.interval, self.backoff.rng)):
                    break
                try:
                    body = self._authed(lambda t, a: self.client.poll(t, a, POLL_LIMIT))
                except Retryable as exc:
                    self._back_off("polling", exc)
                    continue
                except Refused as exc:
                    log.error("polling", "poll_refused", status=exc.status, error=exc.code)
                    self._back_off("polling", Retryable(str(exc)))
                    continue
                self.backoff.reset()
                self.interval = float(body.get("poll_interval_s", 300))
                for command in body.get("commands", []):
                    if self.stopper.stopping:
                        break
                    self._handle(command)
                if not body.get("commands"):
                    self.stopper.sleep(self.interval)
        except Fatal as exc:
            log.error("lifecycle", "agent_stopped", reason=exc)
            return 1
        finally:
            self.journal.close()
        log.info("lifecycle", "agent_stopped", reason="signal")
        return 0

    def _recover(self) -> None:
        """After a crash: commands that were running are failed as interrupted (never
        re-run); results the server has not accepted yet are sent again."""
        for command_id in self.journal.interrupted():
            log.warning("commands", "command_interrupted", command_id=command_id)
            self.journal.finish(command_id, self._result(handlers.INTERRUPTED, None))
        for command_id, result in self.journal.unreported():
            self._report(command_id, result)

    def _result(self, outcome: handlers.Outcome, started_at: str | None) -> dict:
        return {"status": outcome.status, "exit_code": outcome.exit_code, "output": outcome.output,
                "started_at": started_at, "finished_at": _now()}

    def _handle(self, command: dict) -> None:
        command_id, ctype = command["id"], command["type"]
        known = self.journal.status(command_id)
        if known == "done":  # redelivered: never run again, send the stored result
            log.info("commands", "command_redelivered", command_id=command_id, action="resend_result")
            self._report(command_id, self.journal.result(command_id))
            return
        if known in ("skipped", "running"):
            return
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
        ctx = handlers.Context(self.stopper, time.monotonic() + float(command.get("run_timeout_s", 3600)),
                               self.allow_shell)
        outcome = handlers.run(ctype, command.get("params") or {}, ctx)
        result = self._result(outcome, started_at)
        self.journal.finish(command_id, result)
        log.info("commands", "command_finished", command_id=command_id, status=outcome.status,
                 exit_code=outcome.exit_code)
        self._report(command_id, result)

    def _until_answered(self, subsystem: str, call: Callable[[str, str], dict]) -> dict | None:
        """Repeat an idempotent call (ack, result) through failures until the server answers.
        None when a stop ends the retries; a refusal (Refused) goes to the caller."""
        while True:
            try:
                answer = self._authed(call)
                self.backoff.reset()
                return answer
            except Retryable as exc:
                if self.stopper.stopping:
                    return None
                self._back_off(subsystem, exc)
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
        in the journal, for the next start."""
        try:
            if self._until_answered("reporting",
                                    lambda t, a: self.client.result(t, a, command_id, result)) is None:
                return
        except Refused as exc:
            log.warning("commands", "result_refused", command_id=command_id, error=exc.code)
        self.journal.reported(command_id)

def _env(name: str) -> str | None:
    value = os.environ.get(name)
    if not value and os.environ.get(name + "_FILE"):
        try:
            value = Path(os.environ[name + "_FILE"]).read_text().strip()
        except OSError as exc:
            raise SystemExit(f"[ERROR] [agent] [config] unreadable_file variable={name}_FILE error=\"{exc}\"") from None
    return value or None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleetline-agent", description="The Fleetline agent")
    p.add_argument("--server", default=_env("FLEETLINE_AGENT_SERVER"), help="[FLEETLINE_AGENT_SERVER]")
    p.add_argument("--registration-token", default=_env("FLEETLINE_AGENT_REGISTRATION_TOKEN"),
                   help="[FLEETLINE_AGENT_REGISTRATION_TOKEN or _FILE]")
    p.add_argument("--state-dir", type=Path,
                   default=Path(_env("FLEETLINE_AGENT_STATE_DIR") or "/var/lib/fleetline-agent"))
    p.add_argument("--machine-id", default=_env("FLEETLINE_AGENT_MACHINE_ID"))
    p.add_argument("--allow-shell", action="store_true",
                   default=(_env("FLEETLINE_AGENT_ALLOW_SHELL") or "").lower() in ("1", "true", "yes"))
    p.add_argument("--log-level", default=_env("FLEETLINE_AGENT_LOG_LEVEL") or "INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.configure(args.log_level)
    if not args.server:
        log.error("config", "no_server", hint="pass --server URL or set FLEETLINE_AGENT_SERVER")
        return 2
    stopper = Stopper()
    stopper.install()
    return Agent(args.server, args.state_dir, args.registration_token, args.machine_id,
                 args.allow_shell, stopper).run()


if __name__ == "__main__":
    sys.exit(main())
