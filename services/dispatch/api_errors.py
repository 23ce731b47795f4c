"""The one table from the state machine's refusals (commands.py) to API errors."""

from __future__ import annotations

from typing import Callable

from starlette.requests import Request
from starlette.responses import Response

from services.common.errors import ApiError, conflict, forbidden, invalid_token, not_found
from services.common.errors import EXCEPTION_HANDLERS as COMMON_HANDLERS
from services.dispatch import commands as c

ERRORS: dict[type[c.CommandError], Callable[[c.CommandError], ApiError]] = {
    c.UnknownAgent: lambda e: invalid_token("The token's agent does not exist."),
    c.AgentRevoked: lambda e: forbidden("agent_revoked", "This agent has been revoked."),
    c.CommandNotFound: lambda e: not_found("No such command."),
    c.NoSuchTarget: lambda e: not_found("No such agent."),
    c.TargetRevoked: lambda e: conflict("This agent is revoked; it can receive no commands."),
    c.NotDelivered: lambda e: conflict("This command has not been delivered yet; poll for it first."),
    c.OtherOutcome: lambda e: conflict(f"This command already ended {e.status} with another outcome."),
    c.AlreadyFinal: lambda e: conflict(f"This command is already {e.status}; it can no longer change."),
}


def to_api_error(exc: c.CommandError) -> ApiError:
    for cls in type(exc).__mro__:  # the most specific entry wins (OtherOutcome < AlreadyFinal)
        if cls in ERRORS:
            return ERRORS[cls](exc)
    raise exc


async def _command_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, c.CommandError)
    return await COMMON_HANDLERS[ApiError](request, to_api_error(exc))


EXCEPTION_HANDLERS = {**COMMON_HANDLERS, c.CommandError: _command_error}
