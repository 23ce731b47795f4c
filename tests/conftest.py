"""Fixtures every tier that touches PostgreSQL shares: the server (FLEETLINE_TEST_DATABASE_URL,
else an embedded one in a temporary directory), a migrated template, a fresh database per
test, an owner's connection to look at it, and the keys."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from fleetline.cli.keys import ensure_keys
from fleetline.cli.pgembed import EmbeddedPostgres
from tests.realdb import Databases


@pytest.fixture(scope="session")
def pg_server_url():
    url = os.environ.get("FLEETLINE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    data_dir = Path(tempfile.mkdtemp(prefix="fleetline-test-pg-"))
    pg = EmbeddedPostgres(data_dir, fast_unsafe=True)
    pg.start()
    try:
        yield pg.url
    finally:
        pg.destroy()


@contextmanager
def durable_databases() -> Iterator[Databases]:
    """Databases on a server whose commits are flushed (fsync on), as in production: for the
    tests whose subject is what a commit costs (a fleet's first requests, a mass enrolment).
    FLEETLINE_TEST_DATABASE_URL's server when set, else an embedded one of their own."""
    url = os.environ.get("FLEETLINE_TEST_DATABASE_URL")
    pg = None
    if not url:
        pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="fleetline-test-durable-pg-")))
        url = pg.start()
    dbs = Databases(url)
    dbs.create_template()
    try:
        yield dbs
    finally:
        dbs.drop_template()
        if pg is not None:
            pg.destroy()


@pytest.fixture(scope="session")
def databases(pg_server_url):
    dbs = Databases(pg_server_url)
    dbs.create_template()
    yield dbs
    dbs.drop_template()


@pytest.fixture
def database_url(databases):
    url = databases.new()
    yield url
    databases.drop(url)


@pytest.fixture
def sql(database_url):
    """Autocommit psycopg connection for asserting what happened in the database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def key_dir():
    """The access-token key, and the command-signing keys: a root and its public half,
    an online key for dispatch and keyset version 1 listing it (cli/keys.py's names)."""
    d = Path(tempfile.mkdtemp(prefix="fleetline-test-keys-"))
    ensure_keys(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


