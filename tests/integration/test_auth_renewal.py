"""Renewal rotates refresh tokens: a new one every time, a grace for a lost answer, and a
reused token revokes its whole family. Counted in the database."""

import asyncio

import httpx

from tests.integration.conftest import create_registration_token, register
from tests.integration.support import HTTP


def _renew(url, agent_id, refresh, machine="m-renew"):
    return HTTP.post(f"{url}/api/v1/agents/renew", headers={"X-Machine-ID": machine},
                      json={"agent_id": agent_id, "refresh_token": refresh})


def _registered(auth, machine="m-renew"):
    tok = create_registration_token(auth.url)
    return register(auth.url, tok["token"], machine).json()


def _live(sql, agent_id) -> int:
    return sql.execute("SELECT count(*) FROM refresh_tokens WHERE agent_id = %s AND revoked_at IS NULL "
                       "AND consumed_at IS NULL", (agent_id,)).fetchone()[0]


def test_every_renewal_returns_a_new_token_and_consumes_the_old_one(auth, sql):
    reg = _registered(auth)
    first = _renew(auth.url, reg["agent_id"], reg["refresh_token"])
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"access_token", "access_token_expires_at", "refresh_token", "refresh_token_expires_at"}
    assert body["refresh_token"] != reg["refresh_token"] and body["refresh_token"].startswith("flref_")
    second = _renew(auth.url, reg["agent_id"], body["refresh_token"])
    assert second.status_code == 200
    assert _live(sql, reg["agent_id"]) == 1
    consumed = sql.execute("SELECT count(*) FROM refresh_tokens WHERE agent_id = %s AND consumed_at IS NOT NULL",
                           (reg["agent_id"],)).fetchone()[0]
    assert consumed == 2


def test_a_lost_answer_is_forgiven_however_long_ago(auth, sql):
    reg = _registered(auth)
    lost = _renew(auth.url, reg["agent_id"], reg["refresh_token"]).json()["refresh_token"]  # never saved
    sql.execute("UPDATE refresh_tokens SET consumed_at = consumed_at - interval '30 days' WHERE agent_id = %s",
                (reg["agent_id"],))
    again = _renew(auth.url, reg["agent_id"], reg["refresh_token"])
    assert again.status_code == 200 and again.json()["refresh_token"] != lost
    # The unused successor is gone; the fresh one works.
    assert _renew(auth.url, reg["agent_id"], lost).json()["error"] == "invalid_token"
    assert _renew(auth.url, reg["agent_id"], again.json()["refresh_token"]).status_code == 200


def test_reusing_a_consumed_token_revokes_the_whole_family(auth, sql):
    reg = _registered(auth)
    stolen = reg["refresh_token"]
    agent_token = _renew(auth.url, reg["agent_id"], stolen).json()["refresh_token"]
    agent_token = _renew(auth.url, reg["agent_id"], agent_token).json()["refresh_token"]  # its successor is used
    thief = _renew(auth.url, reg["agent_id"], stolen)
    assert (thief.status_code, thief.json()["error"]) == (401, "token_reused")
    assert _live(sql, reg["agent_id"]) == 0
    family = sql.execute("SELECT revoked_at IS NOT NULL, revoked_reason FROM refresh_token_families "
                         "WHERE agent_id = %s", (reg["agent_id"],)).fetchone()
    assert family == (True, "reuse")
    # The real agent's next renewal fails too: it must register again.
    real = _renew(auth.url, reg["agent_id"], agent_token)
    assert (real.status_code, real.json()["error"]) == (401, "token_reused")
    assert "refresh_token_reused" in auth.log() and "security_event=True" in auth.log()


def test_racing_renewals_leave_exactly_one_live_token(start_service, sql):
    svc = start_service("services.auth", FLEETLINE_RENEW_RATE_LIMIT="10/minute")
    reg = _registered(svc)

    async def burst():
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
            return await asyncio.gather(*(
                client.post("/api/v1/agents/renew", headers={"X-Machine-ID": "m-renew"},
                            json={"agent_id": reg["agent_id"], "refresh_token": reg["refresh_token"]})
                for _ in range(20)))

    codes = [r.status_code for r in asyncio.run(burst())]
    assert codes.count(200) == 10 and codes.count(429) == 10, codes
    assert _live(sql, reg["agent_id"]) == 1


def test_registering_again_starts_a_new_family_and_ends_the_old_one(auth, sql):
    tok = create_registration_token(auth.url)
    first = register(auth.url, tok["token"], "m-again").json()
    second = register(auth.url, tok["token"], "m-again").json()
    assert first["agent_id"] == second["agent_id"]
    assert _renew(auth.url, first["agent_id"], first["refresh_token"], "m-again").json()["error"] == "invalid_token"
    assert _renew(auth.url, second["agent_id"], second["refresh_token"], "m-again").status_code == 200
    families = sql.execute("SELECT count(*) FILTER (WHERE revoked_at IS NULL), count(*) FROM refresh_token_families "
                           "WHERE agent_id = %s", (first["agent_id"],)).fetchone()
    assert families == (1, 2)


def test_renewal_refusals(auth, admin_headers, sql):
    reg = _registered(auth)
    other = _registered(auth, machine="m-other")
    cases = [
        ({"agent_id": reg["agent_id"], "refresh_token": "flref_unknown"}, "m-renew", 401, "invalid_token"),
        ({"agent_id": other["agent_id"], "refresh_token": reg["refresh_token"]}, "m-other", 401, "invalid_token"),
        ({"agent_id": "not-a-uuid", "refresh_token": reg["refresh_token"]}, "m-renew", 401, "invalid_token"),
        ({"agent_id": reg["agent_id"], "refresh_token": reg["refresh_token"]}, "m-wrong", 403, "machine_mismatch"),
        ({"agent_id": reg["agent_id"], "refresh_token": reg["refresh_token"]}, "", 403, "machine_mismatch"),
    ]
    for body, machine, status, code in cases:
        resp = HTTP.post(f"{auth.url}/api/v1/agents/renew", json=body,
                          headers={"X-Machine-ID": machine} if machine else {})
        assert (resp.status_code, resp.json()["error"]) == (status, code), body
    assert _live(sql, reg["agent_id"]) == 1  # refusals consumed nothing

    sql.execute("UPDATE refresh_token_families SET expires_at = now() - interval '1 s' WHERE agent_id = %s",
                (reg["agent_id"],))
    assert _renew(auth.url, reg["agent_id"], reg["refresh_token"]).json()["error"] == "invalid_token"

    assert HTTP.delete(f"{auth.url}/api/v1/admin/agents/{other['agent_id']}",
                        headers=admin_headers).status_code == 204
    resp = _renew(auth.url, other["agent_id"], other["refresh_token"], "m-other")
    assert (resp.status_code, resp.json()["error"]) == (403, "agent_revoked")
    assert _live(sql, other["agent_id"]) == 0
