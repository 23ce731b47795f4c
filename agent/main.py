"""The agent, put together: a session with the server (session.py), what it trusts to sign
commands (keyring.py), its journal of what ran (journal.py), a runner per command
(runner.py) and the poll loop (loop.py). It registers once, then holds a long poll, runs
what arrives and reports; forever, politely. The command line is cli.py."""

from __future__ import annotations

import functools

from agent import __version__, handlers, launcher, upgrade
from agent.config import Config
from agent.facts import Reporter
from agent.journal import Journal
from agent.keyring import Keyring
from agent.log import Log
from agent.loop import PollLoop
from agent.runner import Runner, Slots
from agent.session import Fatal, Session
from agent.state import Credentials, resolve_machine_id, secure_dir
from agent.stopper import Stopper

log = Log()


class Agent:
    def __init__(self, config: Config, stopper: Stopper):
        secure_dir(config.state_dir)
        self.config, self.stopper = config, stopper
        self.machine_id = resolve_machine_id(config.machine_id, config.state_dir)
        creds = Credentials(config.state_dir)
        self.keyring = Keyring(creds, config.root_key)  # trust.Untrusted: a root key file that is not one
        self.session = Session(config, self.machine_id, creds, self.keyring, stopper)
        self.journal = Journal(config.state_dir / "journal.sqlite3")
        self.slots = Slots(config.max_parallel, stopper)
        client = self.session.client
        self.layout = upgrade.install_dir()
        self.runner = Runner(self.session, self.keyring, self.journal, stopper, config.allow_shell,
                             upgrade.Upgrader(client.download, self.layout, self._quiesce))
        self.facts = Reporter(config.facts_dir, lambda facts: self.session.authed(
            lambda t, a: client.put_facts(t, a, facts)))
        self.loop = PollLoop(config, self.session, self.runner, self.slots, stopper, self.facts)

    def run(self) -> int:
        code = 0
        try:
            self.session.start()
            log.info("lifecycle", "agent_started", agent_id=self.session.agent_id,
                     machine_id=self.machine_id, version=__version__, long_poll=self.config.long_poll,
                     max_parallel=self.slots.size)
            upgrading, failed = upgrade.settle(self.layout)
            if upgrading is not None and failed is not None:  # rolled back to this release
                self.runner.settled(upgrading, failed)
                upgrading = None
            elif upgrading is not None:
                self.loop.after_first_poll = functools.partial(self._confirm, upgrading)
            self.runner.recover(upgrading)
            self.loop.run()
            if self.runner.fatal is not None:
                raise self.runner.fatal
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
        if code == 0 and self.runner.restart:
            log.info("lifecycle", "agent_stopped", reason="upgrade")
            return launcher.RESTART
        if code == 0:
            log.info("lifecycle", "agent_stopped", reason="signal")
        return code

    def _quiesce(self) -> bool:
        """For an upgrade: no more commands, and the ones running (but the upgrade) ended."""
        self.slots.drain()
        while self.slots.busy() > 1:
            if not self.stopper.sleep(0.2):
                return False
        return True

    def _confirm(self, command_id: str) -> None:
        """This release was started by an upgrade and has just completed an authenticated
        poll: the upgrade succeeded (unless the launcher gave up on it a moment before)."""
        assert self.layout is not None
        outcome = upgrade.confirm(self.layout, command_id, lambda o: self.runner.settled(command_id, o))
        if outcome is not None:
            log.info("upgrade", "upgrade_confirmed", command_id=command_id, version=__version__)
            self.runner.report_stored(command_id)
