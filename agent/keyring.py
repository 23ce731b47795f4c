"""What this agent trusts to sign the commands it runs: a root key pinned from a file (else
from the registration answer, never blindly: trust.first_use_pin) and the keyset that root
vouches for, kept in the state file. trust.py decides; this holds what was decided."""

from __future__ import annotations

import threading
from typing import Callable, Optional, TypeVar

from agent import trust
from agent.log import Log
from agent.state import Credentials
from fleetline.transport import is_loopback_url

log = Log()
T = TypeVar("T")


class Untrustworthy(Exception):
    """No root key can be trusted: the agent must stop (its reason says why)."""


class Keyring:
    def __init__(self, creds: Credentials, root_key: Optional[str] = None):
        self.creds = creds
        self.root = trust.public_key(root_key) if root_key else None
        self.keyset: Optional[trust.Keyset] = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """The pinned root and the keyset held, from the state file (checked again)."""
        if self.root is None and self.creds.data.get("root_public_key"):
            self.root = trust.public_key(self.creds.data["root_public_key"])
        document = self.creds.data.get("command_keyset")
        if self.root is not None and document:
            try:
                self.keyset = trust.read_keyset(self.root, document)
            except trust.Untrusted as exc:
                log.warning("trust", "keyset_not_usable", reason=exc)

    def pin(self, body: dict, server: str, root_key_sha256: Optional[str]) -> dict:
        """Pin the root key the registration answer offers, if nothing is pinned yet and the
        answer is vouched for; otherwise Untrustworthy, before anything is kept. Returns what
        to keep beside the credentials (written with them, in one write)."""
        offered = body.get("root_public_key")
        if self.root is not None:
            if isinstance(offered, str) and trust.public_key(offered) != self.root:
                log.warning("trust", "root_key_differs", hint="the server offers another root key than "
                            "the one pinned; commands it signs will be rejected")
            return {}
        try:
            source = trust.first_use_pin(offered, root_key_sha256, verified_tls=server.startswith("https://"),
                                         loopback=is_loopback_url(server))
        except trust.Untrusted as exc:
            raise Untrustworthy(f"no command-signing root key can be trusted: {exc}") from None
        assert isinstance(offered, str)  # first_use_pin refuses anything else
        self.root = trust.public_key(offered)
        if source == "fingerprint":
            log.info("trust", "root_key_pinned", source=source, sha256=trust.fingerprint(offered))
        else:
            log.warning("trust", "root_key_pinned", source=source, sha256=trust.fingerprint(offered),
                        hint="pin it beforehand with --root-key-sha256 or --root-key-file")
        return {"root_public_key": offered}

    def accept(self, document: object) -> None:
        """A keyset from the server, kept when the root vouches for it and it is newer."""
        if self.root is None:
            return
        with self._lock:
            held = self.keyset.version if self.keyset else 0
            try:
                self.keyset = trust.read_keyset(self.root, document, held)
            except trust.Untrusted as exc:
                log.warning("trust", "keyset_refused", reason=exc)
                return
            self.creds.save(command_keyset=document)
            log.info("trust", "keyset_accepted", version=self.keyset.version, keys=len(self.keyset.keys))

    def verify(self, command: dict, agent_id: str, fetch_keyset: Callable[[], Optional[object]]) -> dict:
        """The verified payload of a command, asking for the keyset once when its key is
        unknown; trust.Untrusted (with the reason it must not run) otherwise."""
        return self._with_keyset(lambda: trust.verify_command(self.keyset, command, agent_id), fetch_keyset)

    def verify_cancel(self, cancel: dict, agent_id: str, fetch_keyset: Callable[[], Optional[object]]) -> str:
        """The command a cancel stops, verified as a command is; trust.Untrusted otherwise."""
        return self._with_keyset(lambda: trust.verify_cancel(self.keyset, cancel, agent_id), fetch_keyset)

    def _with_keyset(self, check: Callable[[], T], fetch_keyset: Callable[[], Optional[object]]) -> T:
        try:
            return check()
        except trust.UnknownKey:
            document = fetch_keyset()
            if document is not None:
                self.accept(document)
            return check()
