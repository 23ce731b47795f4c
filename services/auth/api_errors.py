"""The one table from auth's refusals (enrolment.py, registry.py) to API errors."""

from __future__ import annotations

from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import Response

from services.auth import accounts as a
from services.auth import enrolment as e
from services.auth import registry as r
from services.common.errors import EXCEPTION_HANDLERS as COMMON_HANDLERS
from services.common.errors import ApiError, conflict, forbidden, invalid_token, not_found

MACHINE_ENROLLED = {
    e.CREDENTIALS_USED: "This machine_id belongs to an enrolled agent that has used its credentials: "
                        "an operator must revoke that agent before the machine can register again.",
    e.OTHER_TOKEN: "This machine_id belongs to an active agent registered with another token.",
}

# Each answer reads what its own exception carries (detail, reason, what).
ERRORS: dict[type[Exception], Callable[[Any], ApiError]] = {
    e.TokenRefused: lambda x: invalid_token(x.detail),
    e.MachineEnrolled: lambda x: conflict(MACHINE_ENROLLED[x.reason]),
    e.TokenReused: lambda x: ApiError(401, "token_reused", "This refresh token was already used: its whole "
                                      "family is revoked; register again.", headers={"WWW-Authenticate": "Bearer"}),
    e.AgentRevoked: lambda x: forbidden("agent_revoked", "This agent has been revoked."),
    e.NoSuchAgent: lambda x: not_found("No such agent."),
    r.NoSuchToken: lambda x: not_found("No such registration token."),
    r.ScopeLabel: lambda x: forbidden("forbidden", f"The label {x.name!r} is named by your own scope: an "
                                                   "operator whose scope names it may not set or remove it."),
    a.NoSuchOperator: lambda x: not_found("No such operator."),
    a.NoSuchToken: lambda x: not_found("No such operator token."),
    a.Taken: lambda x: conflict(f"Another operator has this {x.what}."),
    a.BuiltIn: lambda x: conflict("The bootstrap operator is built in: it has no tokens and does not change."),
    a.Disabled: lambda x: conflict("This operator is disabled."),
    a.NotYours: lambda x: forbidden("forbidden", "Only an admin or the operator itself manages its tokens."),
    a.SignInRefused: lambda x: invalid_token("The name and password, token or identity were not accepted."),
    e.MachineMismatch: lambda x: forbidden("machine_mismatch",
                                           "X-Machine-ID is not the machine this agent registered with."),
}


async def _refusal(request: Request, exc: Exception) -> Response:
    # Through the common handler: a 403 forbidden is recorded in the audit trail there.
    return await COMMON_HANDLERS[ApiError](request, ERRORS[type(exc)](exc))


EXCEPTION_HANDLERS = {**COMMON_HANDLERS, e.EnrolmentError: _refusal, r.RegistryError: _refusal,
                      a.AccountError: _refusal}
