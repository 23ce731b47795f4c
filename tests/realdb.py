"""A real PostgreSQL for every test tier that needs one: one template database migrated by
yoyo, a fresh copy of it per test."""

from __future__ import annotations

import uuid

import psycopg


def with_database(server_url: str, dbname: str) -> str:
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{dbname}"


class Databases:
    """One template database migrated by yoyo; each test gets a copy of it. Services connect
    to it as the least-privilege login role (`service_url`), as deployed; tests look at it
    as the owner."""

    def __init__(self, server_url: str):
        self.server_url = server_url
        self.template = f"fl_template_{uuid.uuid4().hex[:8]}"
        self.service_password = uuid.uuid4().hex

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.server_url, autocommit=True)

    def create_template(self) -> None:
        from fleetline.cli.migrate import ensure_service_login, migrate

        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.template}"')
        migrate(with_database(self.server_url, self.template))
        ensure_service_login(self.server_url, self.service_password)

    def service_url(self, url: str) -> str:
        from fleetline.cli.migrate import SERVICE_LOGIN, database_url_as

        return database_url_as(url, SERVICE_LOGIN, self.service_password)

    def new(self) -> str:
        name = f"fl_test_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}" STRATEGY FILE_COPY')
        return with_database(self.server_url, name)

    def drop(self, url: str) -> None:
        name = url.rpartition("/")[2]
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_template(self) -> None:
        self.drop(with_database(self.server_url, self.template))
