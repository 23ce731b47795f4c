"""The poll loop: wait for a free slot, hold one poll open for as many commands as there are
free slots (`--max-parallel`, so nothing waits unacked behind a long command), hand each to
the runner, and back off (with jitter) when the server cannot answer. Cancels come in the
same answers; while every slot is busy, a watcher holds polls that claim nothing
(`cancels_only`), so a cancel still reaches a command that fills the last slot."""

from __future__ import annotations

import functools
import threading
from typing import Callable, Optional

from agent.client import Refused, Retryable
from agent.config import LONG_POLL_WAIT_S, Config
from agent.facts import Reporter
from agent.log import Log
from agent.runner import Runner, Slots
from agent.session import Session
from agent.stopper import Stopper
from agent.timing import Backoff, poll_jitter

log = Log()


class PollLoop:
    def __init__(self, config: Config, session: Session, runner: Runner, slots: Slots, stopper: Stopper,
                 facts: Optional[Reporter] = None):
        self.session, self.runner, self.slots, self.stopper = session, runner, slots, stopper
        self.facts = facts
        self.long_poll = config.long_poll
        self.poll_wait_s = config.poll_wait_s
        self.backoff = Backoff()
        self._watcher: Optional[threading.Thread] = None
        self._watch_refused = False  # a server before 1.3 knows no cancels: no watching then
        # Called once, after the first poll the server answered (an upgrade's confirmation).
        self.after_first_poll: Optional[Callable[[], None]] = None

    def run(self) -> None:
        # Before the first poll and after every failure; not before the first poll of a
        # release an upgrade started (its job's window already spreads the fleet out).
        jitter_next = self.after_first_poll is None
        while not self.stopper.stopping:
            if (jitter_next or not self.long_poll) and not self.stopper.sleep(
                    poll_jitter(self.session.interval, self.backoff.rng)):
                break
            if self.facts is not None:
                # The first report after the first jitter, like the first poll (a fleet
                # restarting does not report all at once); then every facts_interval_s.
                self.facts.report_if_due()
            free = self._wait_for_a_slot()
            if free == 0:
                break
            # An upgrade waits on the first answer: that poll is not held.
            wait = self.poll_wait_s if self.long_poll and self.after_first_poll is None else 0
            try:
                body = self._poll(free, wait)
            except Retryable as exc:
                self.session.back_off("polling", exc, self.backoff)
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
                self.session.back_off("polling", Retryable(str(exc)), self.backoff)
                jitter_next = True
                continue
            if body is None:  # stopping while the poll was held
                break
            self.backoff.reset()
            jitter_next = False
            if self.after_first_poll is not None:
                confirm, self.after_first_poll = self.after_first_poll, None
                confirm()
            self.session.interval = float(body["poll_interval_s"])
            if self.facts is not None:
                interval = body.get("facts_interval_s")
                if body.get("refresh_facts") is True:  # asked for: sent before the next poll
                    self.facts.report_now()
                self.facts.report_if_due(interval if isinstance(interval, (int, float)) else None)
            self._cancels(body)
            for command in body["commands"]:
                self.slots.run(f"command-{command['id'][:8]}", functools.partial(self.runner.handle, command))
            if not self.long_poll and not body["commands"]:
                self.stopper.sleep(self.session.interval)

    def _wait_for_a_slot(self) -> int:
        while not self.stopper.stopping:
            free = self.slots.free()
            if free > 0:
                return free
            self._watch()
            self.stopper.sleep(60, wakeable=True)  # a finishing command wakes us at once
        return 0

    def _cancels(self, body: dict) -> None:
        for cancel in body.get("cancels") or []:
            self.runner.cancel(cancel)

    def _watch(self) -> None:
        """While every slot is busy: polls that claim nothing, each held as long as a poll,
        for the cancels of what runs. One watcher at a time; it ends once a slot is free (a
        poll it holds then ends by itself, at most one wait later)."""
        if self._watch_refused or (self._watcher is not None and self._watcher.is_alive()):
            return
        client, wait = self.session.client, (self.poll_wait_s if self.long_poll else 0)

        def watch() -> None:
            backoff = Backoff(self.backoff.rng)
            while not self.stopper.stopping and self.slots.free() == 0:
                try:
                    body = self.session.authed(lambda t, a: client.poll(t, a, 1, wait, cancels_only=True))
                except Refused as exc:
                    log.warning("polling", "cancel_watch_refused", status=exc.status, error=exc.code)
                    return
                except Exception as exc:  # the poll loop's backoff handles the server's troubles
                    log.warning("polling", "cancel_watch_failed", error=exc)
                    self.stopper.sleep(backoff.next_delay())
                    continue
                backoff.reset()
                if body["commands"]:
                    # A server before 1.3 ignores cancels_only (what it claimed comes back
                    # after its ack timeout) and has no cancels to tell of.
                    log.warning("polling", "cancel_watch_unsupported", claimed=len(body["commands"]))
                    self._watch_refused = True
                    return
                self._cancels(body)
                if not wait:
                    self.stopper.sleep(self.session.interval)

        self._watcher = threading.Thread(target=watch, name="cancel-watch", daemon=True)
        self._watcher.start()

    def _poll(self, limit: int, wait: int) -> Optional[dict]:
        """One poll, held in a helper thread so a stop never waits for it: on SIGTERM the
        agent exits and the closed connection tells the server to claim nothing."""
        outcome: dict = {}
        answered = threading.Event()
        client = self.session.client

        def call() -> None:
            try:
                outcome["body"] = self.session.authed(lambda t, a: client.poll(t, a, limit, wait))
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
