"""The middle tier: the services' operations (the state machine's claim, ack, report and
reap, jobs.advance, enrolment) called in-process against a real PostgreSQL: a fresh
database per test, connected as the services' own least-privilege role, state arranged by
writing rows (a lease already past, an agent already revoked) instead of waiting."""

from __future__ import annotations

import pytest

from fleetline.cli.keys import ONLINE_KEY
from fleetline.settings import postgres_url
from services.common.db import Db
from services.dispatch.app import DB_SETTINGS
from services.dispatch.lifecycle.commands import PollPolicy
from services.dispatch.signing.signer import CommandSigner


@pytest.fixture
async def db(databases, database_url):
    """The pool dispatch and auth use, as the services' role, on this test's database."""
    pool = Db(postgres_url(databases.service_url(database_url)), max_size=20, server_settings=DB_SETTINGS)
    await pool.connect()
    yield pool
    await pool.disconnect()


@pytest.fixture(scope="session")
def signer(key_dir):
    return CommandSigner(str(key_dir / ONLINE_KEY))


@pytest.fixture(scope="session")
def policy():
    return PollPolicy(standard_s=300, rapid_s=5, rapid_window_s=600)

