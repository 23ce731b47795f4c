"""agent_checkin: keyed by the verified token's agent, shared by replicas through Redis."""


from tests.integration.fleet import Fleet
from tests.integration.support import HTTP


def test_checkin_limit_headers_and_path_cannot_bypass(start_dispatch, auth):
    svc = start_dispatch(FLEETLINE_CHECKIN_RATE_LIMIT="3/minute")
    fleet = Fleet(auth.url, svc.url)
    agent, other = fleet.register(), fleet.register()
    url = f"{svc.url}/api/v1/agents/{agent.agent_id}/commands"
    ok = [HTTP.get(url, headers=agent.headers) for _ in range(3)]
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert [r.headers["X-RateLimit-Remaining"] for r in ok] == ["2", "1", "0"]
    assert ok[0].headers["X-RateLimit-Limit"] == "3" and int(ok[0].headers["X-RateLimit-Reset"]) > 0
    limited = HTTP.get(url, headers=agent.headers)
    assert (limited.status_code, limited.json()["error"]) == (429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Another path id does not reset the count: it is refused before anything else.
    bypass = HTTP.get(f"{svc.url}/api/v1/agents/{other.agent_id}/commands", headers=agent.headers)
    assert bypass.status_code == 403
    assert HTTP.get(url, headers=agent.headers).status_code == 429
    # Other agents have their own allowance.
    assert fleet.poll(other)["commands"] == []


def test_checkin_limit_holds_across_two_dispatch_processes(start_dispatch, auth, redis_url):
    env = {"FLEETLINE_CHECKIN_RATE_LIMIT": "5/minute", "FLEETLINE_RATE_LIMIT_STORAGE": redis_url}
    a, b = start_dispatch(**env), start_dispatch(**env)
    agent = Fleet(auth.url, a.url).register()
    codes = []
    for i in range(12):
        svc = a if i % 2 == 0 else b
        resp = HTTP.get(f"{svc.url}/api/v1/agents/{agent.agent_id}/commands", headers=agent.headers)
        codes.append(resp.status_code)
    assert codes.count(200) == 5 and codes.count(429) == 7
    assert codes[:5] == [200] * 5
