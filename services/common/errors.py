"""JSON errors as docs/api.md defines them: {"error": code, "detail": sentence, "field"?: name}."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fleetline.http import error_body
from services.common import audit, service


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict | None = None,
        extra: dict | None = None,
    ):
        super().__init__(detail)
        self.status, self.code, self.detail, self.field = status, code, detail, field
        self.headers = headers or {}
        self.details = details or {}  # for the audit event of a refusal, never in the answer
        self.extra = extra or {}  # fields the answer carries beside the envelope (expected_offset)


def invalid(detail: str, field: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request", detail, field)


def not_found(detail: str = "No such resource.") -> ApiError:
    return ApiError(404, "not_found", detail)


def conflict(detail: str, **extra) -> ApiError:
    return ApiError(409, "conflict", detail, extra=extra)


def invalid_token(detail: str = "The credential is missing, malformed or no longer valid.") -> ApiError:
    return ApiError(401, "invalid_token", detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(code: str, detail: str, details: dict | None = None) -> ApiError:
    return ApiError(403, code, detail, details=details)


def error_response(
    status: int, code: str, detail: str, field: str | None = None, headers: dict | None = None,
    extra: dict | None = None,
) -> JSONResponse:
    return JSONResponse({**(extra or {}), **error_body(code, detail, field)}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if exc.code == "forbidden" and "audit" in request.scope.get("state", {}):
        # An operator refused (a role too low, a scope too narrow): one audit event, on its own.
        action, target = request.state.action, request.state.target
        await audit.record(service.of(request).db, request.state.audit, action,
                           action.split(".")[0] if target else None, target, outcome="forbidden",
                           details={"method": request.method, "path": request.url.path,
                                    "role": request.state.operator.role, "reason": exc.detail, **exc.details})
    return error_response(exc.status, exc.code, exc.detail, exc.field, exc.headers, exc.extra)


_HTTP_CODES = {
    400: "invalid_request",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = "No such path." if exc.status_code == 404 else str(exc.detail)
    if exc.status_code == 405:
        detail = "This method is not allowed on this path."
    return error_response(exc.status_code, code, detail, headers=dict(exc.headers or {}))



# No handler for Exception: ServiceMiddleware (services/common/http.py) makes the one 500.
EXCEPTION_HANDLERS = {ApiError: _api_error, HTTPException: _http_error}
