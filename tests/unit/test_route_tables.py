"""The gateway's route table (gateway/routes.py) and the services' route lists cannot drift:
every service route is routed to its service, and every gateway entry leads somewhere."""

from gateway.routes import ROUTES, route
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
