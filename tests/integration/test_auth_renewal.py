"""Renewal: one transaction, sliding expiry, safe to repeat."""

import asyncio
from datetime import datetime

import httpx

from tests.integration.conftest import create_registration_token, register


def _renew(url, agent_id, refresh, machine):
    return httpx.post(f"{url}/api/v1/agents/renew", headers={"X-Machine-ID": machine},
                      json={"agent_id": agent_id, "refresh_token": refresh})


def _registered(auth, machine="m-renew"):
    tok = create_registration_token(auth.url)
    return register(auth.url, tok["token"], machine).json()


def test_concurrent_renewals_keep_the_token_usable_and_slide_expiry(start_service, sql):
    svc = start_service("services.auth", FLEETLINE_RENEW_RATE_LIMIT="10/minute")
    reg = _registered(svc)
    sql.execute("UPDATE refresh_tokens SET expires_at = now() + interval '1 day'")
    before = sql.execute("SELECT expires_at FROM refresh_tokens").fetchone()[0]

    async def burst():
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
            return await asyncio.gather(*(
                client.post("/api/v1/agents/renew", headers={"X-Machine-ID": "m-renew"},
                            json={"agent_id": reg["agent_id"], "refresh_token": reg["refresh_token"]})
                for _ in range(20)))

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}
    assert codes.count(200) == 10
    after = sql.execute("SELECT expires_at, revoked_at FROM refresh_tokens").fetchone()
    assert after[1] is None
    assert (after[0] - before).days >= 80  # slid to ~90 days from now
    last = max((r for r in responses if r.status_code == 200),
               key=lambda r: r.json()["refresh_token_expires_at"])
    assert datetime.fromisoformat(last.json()["refresh_token_expires_at"].replace("Z", "+00:00")) == after[0]


def test_renewal_can_simply_be_repeated(auth):
    reg = _registered(auth)
    first = _renew(auth.url, reg["agent_id"], reg["refresh_token"], "m-renew")
    second = _renew(auth.url, reg["agent_id"], reg["refresh_token"], "m-renew")
    assert first.status_code == second.status_code == 200
    assert set(first.json()) == {"access_token", "access_token_expires_at", "refresh_token_expires_at"}


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
        resp = httpx.post(f"{auth.url}/api/v1/agents/renew", json=body,
                          headers={"X-Machine-ID": machine} if machine else {})
        assert (resp.status_code, resp.json()["error"]) == (status, code), body

    sql.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 s' WHERE agent_id = %s",
                (reg["agent_id"],))
    assert _renew(auth.url, reg["agent_id"], reg["refresh_token"], "m-renew").status_code == 401

    assert httpx.delete(f"{auth.url}/api/v1/admin/agents/{other['agent_id']}",
                        headers=admin_headers).status_code == 204
    resp = _renew(auth.url, other["agent_id"], other["refresh_token"], "m-other")
    assert (resp.status_code, resp.json()["error"]) == (403, "agent_revoked")
    live = sql.execute("SELECT count(*) FROM refresh_tokens WHERE agent_id = %s AND revoked_at IS NULL",
                       (other["agent_id"],)).fetchone()[0]
    assert live == 0
