"""Registration: use accounting per distinct machine, under real concurrency."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import create_registration_token, register
from tests.integration.dbstate import snapshot
from tests.integration.fleet import Agent
from tests.integration.support import HTTP


def _body(token: str, machine_id: str) -> dict:
    return {"registration_token": token, "machine_id": machine_id, "hostname": "h",
            "os": "linux", "arch": "x86_64", "agent_version": "1.0.0"}


async def _register_many(url: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        return await asyncio.gather(
            *(client.post("/api/v1/agents/register", json=b) for b in bodies)
        )


def test_concurrent_registrations_never_exceed_max_uses(auth, sql):
    tok = create_registration_token(auth.url, max_uses=10)
    bodies = [_body(tok["token"], f"machine-{i}") for i in range(50)]
    responses = asyncio.run(_register_many(auth.url, bodies))

    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 10
    assert statuses.count(401) == 40
    assert all(r.json()["error"] == "invalid_token" for r in responses if r.status_code == 401)
    assert sql.execute("SELECT count(*) FROM agents").fetchone()[0] == 10
    assert sql.execute("SELECT uses FROM registration_tokens").fetchone()[0] == 10
    assert sql.execute("SELECT count(*) FROM refresh_tokens").fetchone()[0] == 10
    # No orphans: every refresh token belongs to an agent that a 201 named.
    winners = {r.json()["agent_id"] for r in responses if r.status_code == 201}
    rows = sql.execute("SELECT agent_id::text FROM refresh_tokens").fetchall()
    assert {r[0] for r in rows} == winners


def test_repeated_registration_from_one_machine_is_one_agent(auth, sql):
    tok = create_registration_token(auth.url, max_uses=1)
    responses = asyncio.run(_register_many(auth.url, [_body(tok["token"], "same-machine")] * 20))

    assert [r.status_code for r in responses] == [201] * 20
    agent_ids = {r.json()["agent_id"] for r in responses}
    assert len(agent_ids) == 1
    assert sql.execute("SELECT count(*) FROM agents").fetchone()[0] == 1
    assert sql.execute("SELECT uses FROM registration_tokens").fetchone()[0] == 1
    live = sql.execute("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL").fetchone()[0]
    assert live == 1

    # Exactly one of the twenty refresh tokens still renews: the newest.
    agent_id = agent_ids.pop()
    renewals = [
        HTTP.post(f"{auth.url}/api/v1/agents/renew", headers={"X-Machine-ID": "same-machine"},
                   json={"agent_id": agent_id, "refresh_token": r.json()["refresh_token"]})
        for r in responses
    ]
    assert sorted(r.status_code for r in renewals) == [200] + [401] * 19


def test_retry_after_lost_response_returns_same_agent_and_revokes_old_refresh(auth, sql):
    tok = create_registration_token(auth.url, max_uses=1)
    first = register(auth.url, tok["token"], "m-lost").json()
    second = register(auth.url, tok["token"], "m-lost").json()
    assert first["agent_id"] == second["agent_id"]
    assert first["refresh_token"] != second["refresh_token"]
    old = HTTP.post(f"{auth.url}/api/v1/agents/renew", headers={"X-Machine-ID": "m-lost"},
                     json={"agent_id": first["agent_id"], "refresh_token": first["refresh_token"]})
    assert old.status_code == 401


def test_used_up_token_is_refused_for_a_new_machine(auth, sql):
    tok = create_registration_token(auth.url, max_uses=1)
    assert register(auth.url, tok["token"], "m-a").status_code == 201
    resp = register(auth.url, tok["token"], "m-b")
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_token"
    assert sql.execute("SELECT count(*) FROM agents").fetchone()[0] == 1


def test_machine_held_by_another_tokens_agent_is_conflict_until_revoked(auth, admin_headers, sql):
    t1 = create_registration_token(auth.url)
    t2 = create_registration_token(auth.url)
    first = register(auth.url, t1["token"], "shared-machine").json()
    resp = register(auth.url, t2["token"], "shared-machine")
    assert resp.status_code == 409
    assert resp.json()["error"] == "conflict"
    assert sql.execute("SELECT uses FROM registration_tokens WHERE id = %s", (t2["id"],)).fetchone()[0] == 0

    assert HTTP.delete(f"{auth.url}/api/v1/admin/agents/{first['agent_id']}",
                        headers=admin_headers).status_code == 204
    again = register(auth.url, t2["token"], "shared-machine")
    assert again.status_code == 201
    assert again.json()["agent_id"] != first["agent_id"]


@pytest.mark.parametrize("change", ["revoked", "expired"])
def test_revoked_or_expired_token_registers_nobody(auth, admin_headers, sql, change):
    tok = create_registration_token(auth.url, max_uses=5)
    if change == "revoked":
        assert HTTP.delete(f"{auth.url}/api/v1/admin/registration-tokens/{tok['id']}",
                            headers=admin_headers).status_code == 204
    else:
        sql.execute("UPDATE registration_tokens SET expires_at = now() - interval '1 s'")
    resp = register(auth.url, tok["token"], "m-x")
    assert resp.status_code == 401
    assert sql.execute("SELECT count(*) FROM agents").fetchone()[0] == 0


def test_failed_refresh_insert_rolls_back_agent_and_token_use(auth, sql, database_url):
    # Fault injection: a trigger in this test's database makes the refresh-token insert fail
    # inside the registration transaction.
    sql.execute("""
        CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
        CREATE TRIGGER refresh_insert_fails BEFORE INSERT ON refresh_tokens
        FOR EACH ROW EXECUTE FUNCTION fail_insert();
    """)
    tok = create_registration_token(auth.url, max_uses=1)
    resp = register(auth.url, tok["token"], "m-fault")
    assert resp.status_code == 500
    assert resp.json() == {"error": "internal",
                           "detail": "An internal error occurred; it has been logged."}
    assert sql.execute("SELECT count(*) FROM agents").fetchone()[0] == 0
    assert sql.execute("SELECT uses FROM registration_tokens").fetchone()[0] == 0

    sql.execute("DROP TRIGGER refresh_insert_fails ON refresh_tokens")
    assert register(auth.url, tok["token"], "m-fault").status_code == 201
    # Logged once, with its traceback as one escaped field: one line per event.
    (logged,) = [line for line in auth.log().splitlines() if "unhandled_exception" in line]
    assert "injected failure" in logged and 'traceback="Traceback (most recent call last):\\n' in logged
    assert "\nTraceback" not in auth.log()


def test_refused_registrations_are_limited_per_client_address_and_then_so_is_every_registration(
        start_service, sql):
    svc = start_service("services.auth", FLEETLINE_REGISTRATION_FAILURE_LIMIT="3/minute")
    statuses = [register(svc.url, "flreg_unknown", f"m-{i}").status_code for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    # Past it, a valid token from that address waits too: a guesser learns nothing more.
    token = create_registration_token(svc.url)["token"]
    limited = register(svc.url, token, "m-9")
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"] == "rate_limited"
    assert sql.execute("SELECT count(*), sum(uses) FROM registration_tokens").fetchone() == (1, 0)


def _renew(url, agent_id, refresh, machine):
    return HTTP.post(f"{url}/api/v1/agents/renew", headers={"X-Machine-ID": machine},
                     json={"agent_id": agent_id, "refresh_token": refresh})


@pytest.mark.parametrize("use", ["poll", "renewal"])
def test_an_enrolled_machine_is_not_taken_over_by_registering_its_machine_id_again(fleet, auth, sql, use):
    tok = create_registration_token(auth.url, max_uses=1)
    first = register(auth.url, tok["token"], "m-owned", hostname="real-host").json()
    agent = Agent(first["agent_id"], "m-owned", first["access_token"], first["refresh_token"])
    if use == "poll":
        fleet.poll(agent)
    else:
        agent.refresh_token = _renew(auth.url, agent.agent_id, agent.refresh_token, "m-owned").json()["refresh_token"]
    before = snapshot(sql)
    # The spent token, then a fresh one with uses left: the machine is not up for grabs.
    fresh = create_registration_token(auth.url, max_uses=5)
    before = snapshot(sql)
    for token in (tok["token"], fresh["token"]):
        resp = HTTP.post(f"{auth.url}/api/v1/agents/register",
                         json={"registration_token": token, "machine_id": "m-owned", "hostname": "attacker"})
        assert (resp.status_code, resp.json()["error"]) == (409, "conflict"), resp.text
    assert snapshot(sql) == before  # nothing changed: no agent, no use, no token revoked
    assert _renew(auth.url, agent.agent_id, agent.refresh_token, "m-owned").status_code == 200
    assert fleet.poll(agent)["commands"] == []
    assert sql.execute("SELECT hostname FROM agents").fetchall() == [("real-host",)]
    refusals = [line for line in auth.log().splitlines() if "registration_refused" in line]
    assert len(refusals) == 2 and all("security_event=True" in line and first["agent_id"] in line
                                      for line in refusals)
    assert "reason=credentials_used" in refusals[0] and "reason=other_token" in refusals[1]


def test_once_revoked_the_machine_enrols_again_as_a_new_agent(fleet, auth, admin_headers):
    agent = fleet.register("m-reenrol")
    fleet.poll(agent)
    assert HTTP.delete(f"{auth.url}/api/v1/admin/agents/{agent.agent_id}", headers=admin_headers).status_code == 204
    tok = create_registration_token(auth.url)
    again = register(auth.url, tok["token"], "m-reenrol")
    assert again.status_code == 201 and again.json()["agent_id"] != agent.agent_id


def test_a_poll_racing_a_repeat_registration_is_ordered_before_or_after_it(fleet, auth, sql):
    """Either the poll was answered first (the repeat is refused and writes nothing), or the
    repeat came first (a retry: new credentials, and the poll's use marked after it). Either
    way the use is recorded, and from then on the machine is not registered again."""
    outcomes = set()
    for i in range(12):
        tok = create_registration_token(auth.url)
        body = register(auth.url, tok["token"], f"m-race-{i}").json()
        agent = Agent(body["agent_id"], f"m-race-{i}", body["access_token"], body["refresh_token"])
        with ThreadPoolExecutor(2) as pool:
            poll = pool.submit(fleet.poll, agent)
            again = pool.submit(register, auth.url, tok["token"], agent.machine_id)
            poll.result()
            status = again.result().status_code
        used_at, families = sql.execute(
            "SELECT a.credentials_used_at, count(f.id) FROM agents a "
            "JOIN refresh_token_families f ON f.agent_id = a.id WHERE a.id = %s GROUP BY a.id",
            (agent.agent_id,)).fetchone()
        assert used_at is not None
        if status == 409:
            assert families == 1  # refused: nothing written
        else:
            assert status == 201 and families == 2
        assert register(auth.url, tok["token"], agent.machine_id).status_code == 409
        outcomes.add(status)
    assert outcomes  # (which orders occur is up to the scheduler; both are correct)
