"""Property-based fuzzing of every operation in the served OpenAPI document (schemathesis),
against the gateway and against each owning service directly, with real credentials.

For every generated request: no 5xx; every error is the JSON envelope; the answer matches
the documented status codes and schemas; and a refused request (any 4xx) changed nothing
in the database (every table fingerprinted before and after).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.openapi import DOCUMENT
from gateway.routes import route
from tests.integration.conftest import ADMIN_TOKEN, create_registration_token, register, signing_env
from tests.integration.dbstate import audit_events, snapshot
from tests.integration.support import HTTP, ServiceProcess

schema = schemathesis.openapi.from_dict(DOCUMENT)
# Valid requests and invalid ones (wrong types, out of range, missing fields, NUL).
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                allow_x00=True)
EXAMPLES = int(os.environ.get("FLEETLINE_FUZZ_EXAMPLES", "20"))
# What the document promises about answers. (Not "schema-valid requests are accepted": the
# document cannot say every rule, such as 64 KiB of JSON or no NUL in text, which the
# services refuse with a 400 that the other checks here hold to the contract.)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@dataclass
class World:
    urls: dict[str, str]
    agent_id: str
    machine_id: str
    access_token: str
    command_id: str
    sql: psycopg.Connection


@pytest.fixture(scope="module")
def world(databases, key_dir, tmp_path_factory):
    database_url = databases.new()
    logs = tmp_path_factory.mktemp("fuzz")
    env = {"FLEETLINE_DATABASE_URL": databases.service_url(database_url), "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN,
           **signing_env(key_dir),
           "FLEETLINE_REGISTRATION_RATE_LIMIT": "1000000/minute", "FLEETLINE_RENEW_RATE_LIMIT": "1000000/minute",
           "FLEETLINE_CHECKIN_RATE_LIMIT": "1000000/minute", "FLEETLINE_REPORT_RATE_LIMIT": "1000000/minute",
           # Nothing moves in the background (a command's TTL ending) between a case's two
           # snapshots: the reaper runs once at start, then not within the test.
           "FLEETLINE_REAPER_INTERVAL_S": "3600", "FLEETLINE_SIGN_IN_RATE_LIMIT": "1000000/minute",
           # Nor do schedules tick: the ticker too looks once at start, then not within the test.
           "FLEETLINE_SCHEDULE_TICK_S": "3600"}
    auth = ServiceProcess("services.auth", env, logs)
    dispatch = ServiceProcess("services.dispatch", {**env, "FLEETLINE_JWKS_URL": f"{auth.url}/.well-known/jwks.json"},
                              logs)
    gateway = ServiceProcess("gateway", {**env, "FLEETLINE_AUTH_URLS": auth.url,
                                         "FLEETLINE_DISPATCH_URLS": dispatch.url}, logs)
    for proc in (auth, dispatch, gateway):  # started side by side, then waited for
        proc.wait_ready()
    machine_id = "fuzz-machine"
    reg = register(auth.url, create_registration_token(auth.url, max_uses=5)["token"], machine_id).json()
    command = HTTP.post(f"{dispatch.url}/api/v1/admin/commands", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                         json={"agent_id": reg["agent_id"], "type": "ping"}).json()
    with psycopg.connect(database_url, autocommit=True) as sql:
        yield World({"gateway": gateway.url, "auth": auth.url, "dispatch": dispatch.url},
                    reg["agent_id"], machine_id, reg["access_token"], command["id"], sql)
    for proc in (gateway, dispatch, auth):
        proc.stop()
    databases.drop(database_url)


def _aim(case, world: World) -> dict[str, str]:
    """Real credentials, and real ids in about half the paths, so cases get past the
    front door; everything else is as generated."""
    if case.operation.path.startswith("/api/v1/admin/"):
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    else:
        headers = {"Authorization": f"Bearer {world.access_token}", "X-Machine-ID": world.machine_id}
    params = case.path_parameters or {}
    if "agent_id" in params and case.method.upper() != "DELETE":
        params["agent_id"] = world.agent_id
    wait = (case.query or {}).get("wait")
    if str(wait).isascii() and str(wait).isdigit() and int(wait) > 1:
        case.query = {**case.query, "wait": 1}  # long polls have their own tests
    if "command_id" in params and uuid.uuid5(uuid.NAMESPACE_URL, str(params["command_id"])).int % 2:
        params["command_id"] = world.command_id
    return headers


@pytest.mark.parametrize("target", ["gateway", "service"])
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_5xx_every_error_is_json_and_refusals_change_nothing(case, world, target):
    headers = _aim(case, world)
    owner = route(case.formatted_path) if target == "service" else None
    base = world.urls[owner] if owner else world.urls["gateway"]
    before, events_before = snapshot(world.sql), audit_events(world.sql)
    response = case.call(base_url=base, headers=headers, timeout=30)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("detail"), str)
        assert response.headers.get("x-request-id")
        assert snapshot(world.sql) == before, (case.method, case.formatted_path, response.status_code)
        if response.status_code not in (401, 403):  # those are recorded; nothing else is
            assert audit_events(world.sql) == events_before, (case.method, case.formatted_path)
    case.validate_response(response, checks=CHECKS)

