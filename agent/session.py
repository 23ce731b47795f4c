"""The agent's session with the server: enrolment (register, and again when the server
refuses its credentials), renewal (one at a time, the new refresh token on disk before it
is used), and calls made with its credentials (renewed once on a 401). Failures the agent
cannot go past end it with `Fatal`; what it may retry comes back as client.Retryable."""

from __future__ import annotations

import platform
import socket
import threading
import time
from datetime import datetime
from typing import Callable, Optional

from agent import __version__
from agent.client import Client, Refused, Retryable, Unauthorized
from agent.config import Config
from agent.keyring import Keyring, Untrustworthy
from agent.log import Log
from agent.state import Credentials
from agent.stopper import Stopper
from agent.timing import BACKOFF_CAP_S, Backoff

RENEW_BEFORE_S = 60  # renew an access token this long before it expires
FATAL_CODES = {"agent_revoked", "machine_mismatch"}

log = Log()

# An authenticated call: (access token, agent id) -> the server's answer.
Call = Callable[[str, str], dict]


class Fatal(Exception):
    """Stop the agent with one clear line and a non-zero exit."""


def expires_soon(stamp: Optional[str]) -> bool:
    if not stamp:
        return True
    try:
        expires = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return True
    return expires - time.time() < RENEW_BEFORE_S


class Session:
    def __init__(self, config: Config, machine_id: str, creds: Credentials, keyring: Keyring, stopper: Stopper):
        self.config, self.machine_id, self.creds = config, machine_id, creds
        self.keyring, self.stopper = keyring, stopper
        self.client = Client(config.server, machine_id, ca_file=config.ca_file)
        self.interval = 0.0  # the poll interval the registration answer gave, until a poll says
        # Renewal and registration one at a time, whichever thread needs fresh credentials.
        self._lock = threading.Lock()

    @property
    def agent_id(self) -> str:
        return self.creds.data["agent_id"]

    def start(self) -> None:
        """Credentials from the state file, or a registration; and a root key to trust."""
        with self._lock:
            loaded = self.creds.load()
            self.keyring.load()
            if not loaded or self.creds.data.get("machine_id") != self.machine_id:
                self._register()
            if self.keyring.root is None:
                raise Fatal("no command-signing root key is pinned: give --root-key-file or "
                            "--root-key-sha256 (the state file holds credentials but no root)")

    # --- enrolment --------------------------------------------------------------------------

    def _register(self, previous: Optional[str] = None) -> None:
        """Register (again), until the server lets this machine in. A machine the server
        says is enrolled (409), or a token refused after that, waits for an operator: it
        logs what to do (`previous`: the agent it was) and tries again at the longest backoff,
        at once when its registration token file changes. The answer's root key is checked
        before anything is kept: an untrusted answer leaves no credentials behind."""
        facts = {"hostname": socket.gethostname()[:255] or "unknown", "os": platform.system().lower(),
                 "arch": platform.machine(), "agent_version": __version__, "labels": self.config.labels}
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
                self.back_off("registration", exc, backoff)
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
        try:
            pinned = self.keyring.pin(body, self.config.server, self.config.root_key_sha256)
        except Untrustworthy as exc:
            raise Fatal(str(exc)) from None
        self.creds.save(**pinned, agent_id=body["agent_id"], machine_id=self.machine_id,
                        access_token=body["access_token"], access_token_expires_at=body["access_token_expires_at"],
                        refresh_token=body["refresh_token"], refresh_token_expires_at=body["refresh_token_expires_at"])
        self.interval = float(body.get("poll_interval_s", 300))
        log.info("auth", "agent_registered", agent_id=body["agent_id"], machine_id=self.machine_id)
        if body.get("command_keyset"):
            self.keyring.accept(body["command_keyset"])

    def _wait_for_operator(self, token: str) -> None:
        """The longest backoff, cut short when the registration token changes."""
        deadline = time.monotonic() + BACKOFF_CAP_S
        log.info("auth", "waiting_for_operator", next_retry_in=f"{BACKOFF_CAP_S:.0f}s")
        while time.monotonic() < deadline and self.stopper.sleep(1.0):
            if self.config.registration_token() != token:
                log.info("auth", "registration_token_changed", action="register_now")
                return

    # --- renewal ----------------------------------------------------------------------------

    def _renew_or_reregister(self, stale_token: Optional[str]) -> None:
        """Fresh credentials, unless another thread got them since `stale_token` failed."""
        with self._lock:
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

    # --- calls with the agent's credentials -----------------------------------------------------

    def authed(self, call: Call) -> dict:
        """Run `call(token, agent_id)`; on 401 renew once and retry."""
        token = self.creds.data.get("access_token")
        if expires_soon(self.creds.data.get("access_token_expires_at")):
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

    def until_answered(self, subsystem: str, call: Call) -> Optional[dict]:
        """Repeat an idempotent call (ack, result) through failures until the server answers.
        None when a stop ends the retries; a refusal (Refused) goes to the caller."""
        backoff = Backoff()
        while True:
            try:
                return self.authed(call)
            except Retryable as exc:
                if self.stopper.stopping:
                    return None
                self.back_off(subsystem, exc, backoff)
                if self.stopper.stopping:
                    return None

    def keyset(self) -> Optional[object]:
        """The server's keyset, asked once (for a command signed by a key not known yet)."""
        try:
            return self.authed(lambda token, agent_id: self.client.keyset(token))
        except (Retryable, Refused) as exc:
            log.warning("trust", "keyset_fetch_failed", reason=exc)
            return None

    def back_off(self, subsystem: str, exc: Retryable, backoff: Backoff) -> None:
        delay = backoff.next_delay(exc.retry_after, exc.rate_limited)
        log.warning(subsystem, "server_unavailable", attempt=backoff.attempt,
                    next_retry_in=f"{delay:.0f}s", reason=exc)
        self.stopper.sleep(delay)
