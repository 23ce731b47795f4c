"""The gateway's route table (gateway/routes.py) and the services' route lists cannot drift:
every service route is routed to its service, and every gateway entry leads somewhere."""

from gateway.routes import ROUTES, held_seconds, route
from tests.unit.routes import console_paths, example, service_routes


def test_every_service_route_is_routed_to_the_service_that_serves_it():
    for service, _method, template in service_routes():
        assert route(example(template)) == service, template


def test_every_gateway_entry_leads_to_a_route_of_its_service():
    for kind, pattern, service in ROUTES:
        served = [t for s, _m, t in service_routes() if s == service]
        if service == "console":
            served = console_paths()
        if kind == "exact":
            assert pattern in served, pattern
        else:
            assert any(t.startswith(pattern) for t in served), pattern


def test_paths_no_service_serves_are_the_gateways_own_404():
    for path in ("/", "/api", "/api/v1", "/api/v1/admin", "/api/v2/agents/register", "/consoles", "/console.js"):
        assert route(path) is None, path


def test_every_console_path_is_routed_to_the_console():
    for template in console_paths():
        assert route(example(template)) == "console", template


def test_no_route_answers_head():
    # Starlette adds HEAD to GET routes; a HEAD on the poll would claim commands.
    assert all(method != "HEAD" for _s, method, _t in service_routes())


def test_every_admin_route_has_exactly_its_line_in_the_access_table():
    """One table of (route -> least role) beside each service's routes: no admin route
    without a role, no role for a route that is not there."""
    from services.common.operators import ROLES
    from tests.unit.routes import SERVICES

    for name, module in SERVICES.items():
        served = {f"{m} {r.path}" for r in module.ADMIN_ROUTES for m in r.methods}
        assert served == set(module.ACCESS), name
        for key, access in module.ACCESS.items():
            assert access.role in ROLES, key
            assert access.action.count(".") == 1 and access.action.islower(), key
        # A viewer changes nothing: every POST, PUT, PATCH and DELETE takes more, but the
        # operator's own tokens and sign-out, which the operations check themselves.
        own = {"POST /operators/{operator_id}/tokens", "DELETE /operator-tokens/{token_id}", "POST /sign-out"}
        for key, access in module.ACCESS.items():
            if key.split()[0] != "GET" and key not in own:
                assert access.role != "viewer", key


def test_a_held_request_gets_its_wait_added_up_to_the_servers_longest():
    def held(path: str, query: bytes, max_wait_s: int = 60, method: str = "GET") -> int:
        return held_seconds({"method": method, "path": path, "query_string": query}, max_wait_s)

    poll, output = "/api/v1/agents/a/commands", "/api/v1/admin/commands/c/output"
    assert held(poll, b"limit=1&wait=55") == 55
    assert held(output, b"offset=0&wait=30") == 30
    assert held(poll, b"wait=250") == 60  # past the server's longest: the service answers 400 anyway
    assert held(poll, b"wait=250", max_wait_s=300) == 250
    assert [held(poll, q) for q in (b"wait=-1", b"wait=1e3", b"wait=\xd9\xa1", b"wait=9999", b"")] == [0] * 5
    assert held("/api/v1/admin/jobs", b"wait=30") == 0 and held(poll, b"wait=30", method="POST") == 0
