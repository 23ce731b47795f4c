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
    # The fresh one works; the lost one is retired as consumed (presenting it would be a
    # reuse: see the theft tests below).
    assert _renew(auth.url, reg["agent_id"], again.json()["refresh_token"]).status_code == 200
    retired = sql.execute("SELECT consumed_at IS NOT NULL, revoked_at IS NOT NULL FROM refresh_tokens "
                          "WHERE token_hash = sha256(%s::bytea)", (lost.encode(),)).fetchone()
    assert retired == (True, True)


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


def test_a_thief_renewing_after_the_agent_is_detected_at_the_agents_next_renewal(auth, sql):
    """R1 -> R2 by the agent; a copy of R1 renewed again takes the grace (R3) and retires R2.
    The agent's R2 is then a reuse: the family dies, the thief's R3 with it."""
    reg = _registered(auth)
    r2 = _renew(auth.url, reg["agent_id"], reg["refresh_token"]).json()["refresh_token"]
    thief = _renew(auth.url, reg["agent_id"], reg["refresh_token"])
    assert thief.status_code == 200
    agent = _renew(auth.url, reg["agent_id"], r2)
    assert (agent.status_code, agent.json()["error"]) == (401, "token_reused")
    again = _renew(auth.url, reg["agent_id"], thief.json()["refresh_token"])
    assert (again.status_code, again.json()["error"]) == (401, "token_reused")
    assert _live(sql, reg["agent_id"]) == 0
    assert sql.execute("SELECT revoked_reason FROM refresh_token_families WHERE agent_id = %s",
                       (reg["agent_id"],)).fetchone() == ("reuse",)
    events = [line for line in auth.log().splitlines() if "refresh_token_reused" in line]
    assert len(events) == 1 and "security_event=True" in events[0] and reg["agent_id"] in events[0]


def test_a_thief_renewing_first_is_detected_when_it_uses_its_token(auth, sql):
    """The thief renews a copy of R1 first (R2'); the agent's R1 takes the grace (R2) and
    retires R2'; the thief's R2' is then a reuse."""
    reg = _registered(auth)
    stolen = _renew(auth.url, reg["agent_id"], reg["refresh_token"]).json()["refresh_token"]
    agent = _renew(auth.url, reg["agent_id"], reg["refresh_token"])
    assert agent.status_code == 200
    thief = _renew(auth.url, reg["agent_id"], stolen)
    assert (thief.status_code, thief.json()["error"]) == (401, "token_reused")
    later = _renew(auth.url, reg["agent_id"], agent.json()["refresh_token"])
    assert (later.status_code, later.json()["error"]) == (401, "token_reused")


def test_made_up_refresh_tokens_are_limited_per_address_and_never_cost_the_agent_its_renewal(
        start_service, sql):
    svc = start_service("services.auth", FLEETLINE_RENEW_RATE_LIMIT="10/minute",
                        FLEETLINE_RENEW_FAILURE_LIMIT="10/minute")
    reg = _registered(svc)
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30) as attacker:
        codes = [attacker.post(f"{svc.url}/api/v1/agents/renew", headers={"X-Machine-ID": "m-renew"},
                               json={"agent_id": reg["agent_id"], "refresh_token": f"flref_made-up-{i}"}).status_code
                 for i in range(30)]
        limited = attacker.post(f"{svc.url}/api/v1/agents/renew", headers={"X-Machine-ID": "m-renew"},
                                json={"agent_id": reg["agent_id"], "refresh_token": "flref_another"})
    assert codes[:10] == [401] * 10 and codes[10:] == [429] * 20
    assert limited.json()["error"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
    assert _live(sql, reg["agent_id"]) == 1  # nothing consumed
    # The agent itself, from its own address, renews as often as its own limit allows.
    token = reg["refresh_token"]
    for _ in range(10):
        answer = _renew(svc.url, reg["agent_id"], token)
        assert answer.status_code == 200, answer.text
        token = answer.json()["refresh_token"]
    assert _renew(svc.url, reg["agent_id"], token).status_code == 429
