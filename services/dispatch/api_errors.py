"""The one table from the refusals of the lifecycle (commands.py, jobs.py, approvals.py) and
of live output to API errors."""

from __future__ import annotations

from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import Response

from services.common.errors import EXCEPTION_HANDLERS as COMMON_HANDLERS
from services.common.errors import ApiError, conflict, forbidden, invalid, invalid_token, not_found
from services.dispatch.lifecycle import approvals as a
from services.dispatch.lifecycle import commands as c
from services.dispatch.lifecycle import jobs as j
from services.dispatch.lifecycle import schedules as s
from services.dispatch.output import chunks as o
from services.dispatch.output import followers as f

# Each answer reads what its own exception carries (status, reason, expected, ids).
ERRORS: dict[type[Exception], Callable[[Any], ApiError]] = {
    c.UnknownAgent: lambda e: invalid_token("The token's agent does not exist."),
    c.AgentRevoked: lambda e: forbidden("agent_revoked", "This agent has been revoked."),
    c.CommandNotFound: lambda e: not_found("No such command."),
    c.NoSuchTarget: lambda e: not_found("No such agent."),
    c.TargetRevoked: lambda e: conflict("This agent is revoked; it can receive no commands."),
    c.NotDelivered: lambda e: conflict("This command has not been delivered yet; poll for it first."),
    c.OtherOutcome: lambda e: conflict(f"This command already ended {e.status} with another outcome."),
    c.AlreadyFinal: lambda e: conflict(f"This command is already {e.status}; it can no longer change."),
    c.OutOfScope: lambda e: forbidden("forbidden", e.reason),
    o.NotRunning: lambda e: conflict(f"This command is {e.status}: only a running command takes output."),
    f.TooManyHeld: lambda e: ApiError(
        429, "rate_limited", f"This operator already follows {f.HELD_PER_OPERATOR} outputs here; "
        f"retry after {f.HELD_RETRY_AFTER_S} s.", headers={"Retry-After": str(f.HELD_RETRY_AFTER_S)}),
    o.OffsetConflict: lambda e: conflict(f"The output stored so far ends at byte {e.expected}; send from there.",
                                         expected_offset=e.expected),
    j.JobNotFound: lambda e: not_found("No such job."),
    j.NoTargets: lambda e: invalid("The selector matches no active agent.", "selector"),
    j.InactiveTargets: lambda e: invalid(
        f"These agent ids are unknown or revoked: {_listed(e.ids)}.", "selector.agent_ids"),
    j.JobFinished: lambda e: conflict(f"This job is already {e.status}; it can no longer be cancelled."),
    j.KeyReused: lambda e: conflict("This idempotency key was used for a job with a different request."),
    a.NotAwaiting: lambda e: conflict(f"This request is {e.status}, not awaiting approval."),
    a.OwnRequest: lambda e: forbidden("forbidden", "An operator may not approve its own request: another must."),
    s.ScheduleNotFound: lambda e: not_found("No such schedule."),
    s.NameTaken: lambda e: conflict("A schedule of that name exists already.", field="name"),
    s.NotStartable: lambda e: conflict(f"This schedule is {e.status}: it starts nothing until it is approved."),
}


def _listed(ids: list[str], shown: int = 20) -> str:
    more = len(ids) - shown
    return ", ".join(ids[:shown]) + (f" and {more} more" if more > 0 else "")


def to_api_error(exc: Exception) -> ApiError:
    for cls in type(exc).__mro__:  # the most specific entry wins (OtherOutcome < AlreadyFinal)
        if cls in ERRORS:
            return ERRORS[cls](exc)
    raise exc


async def _refusal(request: Request, exc: Exception) -> Response:
    return await COMMON_HANDLERS[ApiError](request, to_api_error(exc))


EXCEPTION_HANDLERS = {**COMMON_HANDLERS, c.CommandError: _refusal, j.JobError: _refusal,
                      a.ApprovalError: _refusal, s.ScheduleError: _refusal}
