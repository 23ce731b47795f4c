"""Every route under the admin mount requires the admin token; unknown paths stay 404."""

from starlette.applications import Starlette
from starlette.responses import JSONResponse

from services.common.admin import admin_mount
from services.common.errors import EXCEPTION_HANDLERS
from services.common.http import api_route
from tests.unit.asgi import call

TOKEN = "operator-secret"


async def hello(request):
    return JSONResponse({"hello": request.path_params.get("x", "all")})


ROUTES = [api_route("/things", GET=hello), api_route("/things/{x}", DELETE=hello)]
APP = Starlette(routes=[admin_mount(ROUTES, TOKEN)], exception_handlers=EXCEPTION_HANDLERS)
AUTHORISED = {"Authorization": f"Bearer {TOKEN}"}


def test_an_admin_route_needs_the_token():
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        status, _, body = call(APP, "GET", "/api/v1/admin/things", headers)
        assert status == 401 and body["error"] == "invalid_token"
    assert call(APP, "GET", "/api/v1/admin/things", AUTHORISED)[::2] == (200, {"hello": "all"})


def test_path_parameters_reach_the_endpoint():
    assert call(APP, "DELETE", "/api/v1/admin/things/x1", AUTHORISED)[2] == {"hello": "x1"}


def test_unknown_admin_paths_are_404_with_or_without_a_token():
    for headers in ({}, AUTHORISED):
        assert call(APP, "GET", "/api/v1/admin/nothing", headers)[0] == 404


def test_a_method_not_listed_is_405_once_authorised():
    status, headers, body = call(APP, "POST", "/api/v1/admin/things", AUTHORISED)
    assert status == 405 and body["error"] == "method_not_allowed" and headers["allow"] == "GET"
