"""The one owner of every status of a command and of a job: nothing outside this package
creates them or changes their status (tests/unit/test_sql_owners.py reads every queries
module to hold that). Handlers elsewhere parse, call one operation here, and render.

- commands.py: a command's transitions (claim, ack, result, create, cancel, reap, a revoked
  agent's undelivered job commands) and the pure decisions on what a statement found; a
  running command's cancel is signed here and handed to its agent by the claim;
- jobs.py: a job's creation, its one insert of commands, cancel, and `advance`, the one
  place a running job moves on (halt, complete, release its window);
- approvals.py: the two-person rule (approve, deny, expire), and the policy's row;
- materialiser.py: a large job's commands, made a slice at a time in the background;
- schedules.py, ticker.py: recurring jobs, each tick starting one (in one transaction with
  its run), with the creator's authority; schedule_rules.py decides when ticks fall;
- reaper.py, revocations.py: what time and a revocation end, on a beat and on a notification;
- issuing.py: what issuing any command takes (the approvals it needs, its signed payload);
- rollout.py, approval_policy.py: the rules, as pure functions;
- queries.py: every statement of the above, with why each lock and guard is there.
"""
