"""Running one command, in its own worker thread, in this order: journal `received` -> ack
(just before it starts) -> journal `running` (on disk) -> run -> journal `done` with the
result -> report until the server accepts it. A command the journal already knows is never
run again on this machine; one whose signature does not hold is never run at all. A cancel
that verifies is journaled, then stops its command if it runs (handlers.py says how), or
keeps it from starting."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional

from agent import handlers, trust, upgrade
from agent.client import Refused, Retryable
from agent.journal import Journal
from agent.keyring import Keyring
from agent.log import Log
from agent.results import fit_output
from agent.session import Fatal, Session
from agent.stopper import Stopper
from agent.streaming import OutputStream, StreamEnded

log = Log()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class Slots:
    """How many commands may run at once; a finished one wakes the poll loop."""

    def __init__(self, size: int, stopper: Stopper):
        self.size, self.stopper = size, stopper
        self._busy = 0
        self._draining = False
        self._lock = threading.Lock()
        self.threads: List[threading.Thread] = []

    def free(self) -> int:
        with self._lock:
            return 0 if self._draining else self.size - self._busy

    def busy(self) -> int:
        with self._lock:
            return self._busy

    def drain(self) -> None:
        """Take no more commands (an upgrade waits for the others to end, then restarts)."""
        with self._lock:
            self._draining = True

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


class Runner:
    def __init__(self, session: Session, keyring: Keyring, journal: Journal, stopper: Stopper,
                 allow_shell: bool, upgrader: Optional[upgrade.Upgrader] = None):
        self.session, self.keyring, self.journal = session, keyring, journal
        self.stopper, self.allow_shell, self.upgrader = stopper, allow_shell, upgrader
        self.restart = False  # an upgrade switched releases: the agent exits for its launcher
        self.client = session.client
        self.fatal: Optional[Fatal] = None  # set by a command thread that must stop the agent
        self._live: Dict[str, threading.Event] = {}  # command id -> its cancel, while handled
        self._live_lock = threading.Lock()

    def recover(self, upgrading: Optional[str] = None) -> None:
        """After a crash: commands that were running are failed as interrupted (never
        re-run), but for the upgrade this release was started to settle (`upgrading`);
        results the server has not accepted yet are sent again."""
        for command_id in self.journal.interrupted():
            if command_id == upgrading:
                continue
            log.warning("commands", "command_interrupted", command_id=command_id)
            self.journal.finish(command_id, self._result(handlers.INTERRUPTED, None))
        for command_id, result in self.journal.unreported():
            self._report(command_id, result)

    def cancel(self, cancel: dict) -> None:
        """A cancel from a poll answer: obeyed only when its signature holds for this agent."""
        command_id = cancel.get("command_id")
        try:
            verified = self.keyring.verify_cancel(cancel, self.session.agent_id, self.session.keyset)
        except trust.Untrusted as exc:
            log.warning("trust", "cancel_rejected", command_id=command_id, reason=exc)
            return
        if self.journal.cancel(verified):
            log.info("commands", "cancel_received", command_id=verified)
        with self._live_lock:
            event = self._live.get(verified)
        if event is not None:
            event.set()

    def handle(self, command: dict) -> None:
        with self._live_lock:
            cancel = self._live.setdefault(command["id"], threading.Event())
        try:
            self._handle_one(command, cancel)
        except Fatal as exc:  # the poll loop stops, and the agent says why, once
            self.fatal = self.fatal or exc
            self.stopper.stop()
        except Exception as exc:  # a bug: the journal keeps where the command was
            log.error("commands", "command_handling_failed", command_id=command.get("id"), error=exc,
                      exc_info=exc)
        finally:
            with self._live_lock:
                self._live.pop(command["id"], None)

    def _handle_one(self, command: dict, cancel: threading.Event) -> None:
        command_id, ctype = command["id"], command["type"]
        known = self.journal.status(command_id)
        if known == "done":  # redelivered: never run again, send the stored result
            log.info("commands", "command_redelivered", command_id=command_id, action="resend_result")
            stored = self.journal.result(command_id)
            if stored is not None:  # journal.finish writes the status and its result together
                self._report(command_id, stored)
            return
        if known in ("skipped", "running"):
            return
        try:
            payload = self.keyring.verify(command, self.session.agent_id, self.session.keyset)
        except trust.Untrusted as exc:
            self._reject(command_id, ctype, str(exc))
            return
        ctype = payload["type"]  # from here on, only what the signature covers
        self.journal.receive(command_id, ctype)
        if self.journal.cancelled(command_id):  # its cancel came first: never started
            log.info("commands", "command_not_run", command_id=command_id, status="cancelled")
            self.journal.skip(command_id)
            return
        state = self._ack(command_id)
        if state is None:
            return
        if state.get("status") != "running":
            log.info("commands", "command_not_run", command_id=command_id, status=state.get("status"))
            self.journal.skip(command_id)
            return
        self.journal.start(command_id)
        started_at = _now()
        if cancel.is_set() or self.journal.cancelled(command_id):  # came while it was acked
            self._finish(command_id, handlers.cancelled(how="before it started"), started_at)
            return
        # Who asked for it (and who approved it), as the signature vouches: the agent's own
        # record of every command it runs, whatever the server's history later says.
        log.info("commands", "command_started", command_id=command_id, type=ctype,
                 issued_by=payload.get("issued_by"), approved_by=",".join(payload.get("approved_by") or []) or None)
        stream = OutputStream(command_id, lambda offset, data: self._send_output(command_id, offset, data),
                              retryable=(Retryable,), log=log)
        ctx = handlers.Context(self.stopper, time.monotonic() + float(payload["run_timeout_s"]),
                               self.allow_shell, output=stream.feed, cancelled=cancel)
        try:
            if ctype == "agent.upgrade" and self.upgrader is not None:
                outcome = self.upgrader.run(command_id, payload["params"])
            else:
                outcome = handlers.run(ctype, payload["params"], ctx)
        except upgrade.Restarting:  # stays running: the new release settles it
            self.restart = True
            self.stopper.stop()
            return
        finally:
            stream.close()  # what is still waiting goes once, now: then the result
        self._finish(command_id, outcome, started_at)

    def settled(self, command_id: str, outcome: handlers.Outcome) -> None:
        """An upgrade's end, decided by the release that took charge (upgrade.py): journaled
        like any result (the journal may not know it, if it was lost with the old release)."""
        if self.journal.status(command_id) is None:
            self.journal.receive(command_id, "agent.upgrade")
        self.journal.finish(command_id, self._result(outcome, None))
        log.info("commands", "command_finished", command_id=command_id, status=outcome.status)

    def _finish(self, command_id: str, outcome: handlers.Outcome, started_at: Optional[str]) -> None:
        result = self._result(outcome, started_at)
        self.journal.finish(command_id, result)
        log.info("commands", "command_finished", command_id=command_id, status=outcome.status,
                 exit_code=outcome.exit_code, **({"cancelled": True} if outcome.cancelled else {}))
        self._report(command_id, result)

    def _reject(self, command_id: str, ctype: str, reason: str) -> None:
        """Refused, never run: no ack; the server hears `rejected` and why."""
        log.warning("trust", "command_rejected", command_id=command_id, reason=reason)
        self.journal.receive(command_id, ctype)
        result = {"status": "rejected", "exit_code": None, "output": fit_output(f"rejected: {reason}"),
                  "started_at": None, "finished_at": _now()}
        self.journal.finish(command_id, result)
        self._report(command_id, result)

    def _result(self, outcome: handlers.Outcome, started_at: Optional[str]) -> dict:
        result = {"status": outcome.status, "exit_code": outcome.exit_code,
                  "output": fit_output(outcome.output, outcome.note),
                  "started_at": started_at, "finished_at": _now()}
        if outcome.cancelled:
            result["cancelled"] = True
        return result

    def _send_output(self, command_id: str, offset: int, data: str) -> dict:
        """One chunk of live output; Retryable goes to the stream (it retries while the
        command runs), anything final ends the stream."""
        try:
            return self.session.authed(lambda t, a: self.client.output(t, a, command_id, offset, data))
        except (Refused, Fatal) as exc:
            raise StreamEnded(str(exc)) from None

    def _ack(self, command_id: str) -> Optional[dict]:
        """Repeating an ack is a no-op server-side, so a lost response costs nothing. None
        means do not run: refused (the journal skips it), or stopping (it stays `received`
        and the server redelivers it)."""
        try:
            return self.session.until_answered("commands", lambda t, a: self.client.ack(t, a, command_id))
        except Refused as exc:
            log.warning("commands", "ack_refused", command_id=command_id, error=exc.code)
            self.journal.skip(command_id)
            return None

    def report_stored(self, command_id: str) -> None:
        stored = self.journal.result(command_id)
        if stored is not None:
            self._report(command_id, stored)

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
        return self.session.until_answered(
            "reporting", lambda t, a: self.client.result(t, a, command_id, result)) is not None
