"""The status vocabulary of the API, written once: where a command, a job target, a job or
an agent stands. Dispatch (its state machine and rollout rules), the OpenAPI document, the
console and the CLI read it here; the migrations' CHECK constraints spell the same words,
and a test reads those back from the database and compares."""

# A command (API: the command lifecycle). One that needs approval first waits, unsigned and
# not claimable, `awaiting_approval` (-> `pending` once approved, `denied` if not). Live
# ones (in flight: claimable or delivered) may still change; final ones never do.
AWAITING = "awaiting_approval"
COMMAND_LIVE = ("pending", "sent", "running")
COMMAND_FINAL = ("succeeded", "failed", "rejected", "timed_out", "expired", "cancelled", "denied")
COMMAND_STATUSES = (AWAITING, *COMMAND_LIVE, *COMMAND_FINAL)
# What an agent reports as a command's result.
OUTCOMES = ("succeeded", "failed", "rejected")
# The ends of a job's target that count against its max_failures (cancelled and skipped do not).
FAILURES = ("failed", "timed_out", "expired", "rejected")

# A job's target: its command's status, or `waiting` (held back by the rollout window, not
# yet claimable) or `skipped` (cancelled because the job halted). Live ones first.
TARGET_LIVE = (AWAITING, "waiting", *COMMAND_LIVE)
TARGET_ENDS = ("succeeded", "failed", "timed_out", "expired", "rejected", "cancelled", "skipped", "denied")
TARGET_STATUSES = TARGET_LIVE + TARGET_ENDS

JOB_STATUSES = (AWAITING, "running", "completed", "halted", "cancelled", "denied")
AGENT_STATUSES = ("active", "revoked")


def shown(command: dict) -> str:
    """A command's status as people read it: a running one whose cancel was asked for is
    `cancelling...` until its agent reports (the console and the CLI say the same)."""
    if command.get("status") == "running" and command.get("cancel_requested_at"):
        return "cancelling..."
    return str(command.get("status"))
