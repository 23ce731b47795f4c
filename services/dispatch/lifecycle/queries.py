"""Every statement that creates a command or a job or changes its status, and the reads
the lifecycle's decisions need, one by one, with why each lock and guard is there. The
operations of this package run them and decide what their answers mean; no statement
outside this module writes `commands.status` or `jobs.status`
(tests/unit/test_sql_owners.py reads every queries module to hold that).

Rules every statement here follows (River, Oban, pg-boss, graphile-worker):
- State changes are guarded by the state they expect (`AND status IN (...)`); zero rows
  updated means a duplicate or stale request, which the caller answers idempotently.
- Times are `statement_timestamp()`, never `now()` (a transaction's start).
- Each statement runs on its own (autocommit) unless an operation's transaction says why:
  no transaction is held across a round trip to anything but PostgreSQL.
"""

from services.dispatch.lifecycle import rollout
from services.dispatch.wakeups.channels import (
    AGENT_CHANNEL,
    NOTIFY_AGENT,
    OUTPUT_CHANNEL,
    WAKE_BATCH,
)
from services.dispatch.wakeups.channels import NOTIFY_AGENTS as _NOTIFY_AGENTS

# --- rules, each written once ------------------------------------------------------------
# They read a command row aliased `c`.

# A lease or a pending command is due when its one due-time column has passed (pending:
# created_at; sent: the ack timeout; running: the run timeout).
DUE = "(c.visible_at <= statement_timestamp())"

# Past expires_at a command is never delivered (it becomes expired).
EXPIRED = "(c.expires_at <= statement_timestamp())"

# A sent command may be delivered again only while it has retries left; once they are used
# up, its lapsed lease makes it timed_out instead.
RETRIES_LEFT = "(c.retry_count < c.max_retries)"

# A sent command whose lease lapsed with no retry left: it will never be delivered again
# and must not start (the reaper makes it timed_out; so does a late ack).
LEASE_EXHAUSTED = f"({DUE} AND NOT {RETRIES_LEFT})"

# The columns of the command state object (docs/api.md), shared by every statement below.
COMMAND_COLUMNS = """id, agent_id, type, params, status, priority, retry_count, max_retries,
    delivery_count, ack_timeout_s, run_timeout_s, idempotency_key, created_at, sent_at,
    acked_at, finished_at, expires_at, result, signed, job_id, created_by_id, created_by_name,
    cancelled_by_id, cancelled_by_name, approvals, approvals_required, denied_reason, output_bytes,
    output_truncated, cancel_requested_at"""

# --- the poll -------------------------------------------------------------------------

# One statement, one round trip:
# - `agent` is MATERIALIZED and read without a lock (FOR SHARE cost 25-35 %): it tells
#   "unknown" (no row at all), "revoked" and "active" apart for the caller.
# - `due` holds every eligibility filter *inside* the locked, LIMITed CTE (agent, live
#   status, due time, not expired, retries left), so the LIMIT counts only rows we may
#   deliver. MATERIALIZED keeps the planner from running the locking subquery twice.
#   FOR NO KEY UPDATE SKIP LOCKED: concurrent polls skip each other's rows instead of
#   waiting, and inserts that reference the command (the ledger) are not blocked. A row
#   another poll re-leased meanwhile is re-checked (visible_at moved on) and dropped.
# - `claimed` re-leases: retry_count rises in the same UPDATE, and only for a row that was
#   already `sent` (a redelivery), so it can never be counted in Python or twice: the
#   lease is due again only after its ack timeout. delivery_count is its own counter.
# - `ledger` records each delivery in the same statement: retry_count = deliveries - 1.
# - `in_flight` and `last_sent_at` are the facts the poll-interval policy needs
#   (commands.PollPolicy decides); only read when nothing was claimed (CASE is lazy).
# - `cancels` hands over the signed cancels of this agent's running commands that are due
#   (cancel_visible_at passed), and makes each due again 30 s later: until the agent
#   reports, a cancel whose answer was lost is handed over again. Its rows are running
#   ones, never those `claimed` touches (pending, sent), so no row is updated twice.
# An empty poll is therefore: the agent's primary key, one probe of commands_claimable,
# and three probes of small partial indexes (commands_in_flight, commands_recent_delivery,
# commands_cancelling);
# tests/integration/test_dispatch_plans.py checks the plan has no sequential scan and no sort.
CLAIM = f"""
WITH agent AS MATERIALIZED (
    SELECT status, facts_requested_at > coalesce(facts_updated_at, '-infinity') AS refresh_facts
      FROM agents WHERE id = $1
), due AS MATERIALIZED (
    SELECT c.id
      FROM commands c
     WHERE c.agent_id = $1
       AND c.status IN ('pending', 'sent')
       AND {DUE}
       AND NOT {EXPIRED}
       AND (c.status = 'pending' OR {RETRIES_LEFT})
       AND EXISTS (SELECT 1 FROM agent WHERE agent.status = 'active')
     ORDER BY c.priority DESC, c.created_at, c.id
     LIMIT $2
       FOR NO KEY UPDATE SKIP LOCKED
), claimed AS (
    UPDATE commands c
       SET retry_count = c.retry_count + (c.status = 'sent')::int,
           delivery_count = c.delivery_count + 1,
           status = 'sent',
           sent_at = statement_timestamp(),
           visible_at = statement_timestamp() + make_interval(secs => c.ack_timeout_s)
      FROM due
     WHERE c.id = due.id
    RETURNING c.id, c.type, c.params, c.priority, c.created_at, c.expires_at,
              c.delivery_count, c.run_timeout_s, c.ack_timeout_s, c.signed
), ledger AS (
    INSERT INTO deliveries (command_id, delivery, delivered_at)
    SELECT id, delivery_count, statement_timestamp() FROM claimed
), cancels AS (
    UPDATE commands c
       SET cancel_visible_at = statement_timestamp() + interval '30 seconds'
      FROM (SELECT x.id FROM commands x
             WHERE x.agent_id = $1 AND x.status = 'running'
               AND x.cancel_visible_at <= statement_timestamp()
               AND EXISTS (SELECT 1 FROM agent WHERE agent.status = 'active')
               FOR NO KEY UPDATE SKIP LOCKED) AS due_cancel
     WHERE c.id = due_cancel.id AND c.status = 'running'
    RETURNING c.id, c.cancel_signed
)
SELECT agent.status AS agent_status,
       coalesce(agent.refresh_facts, false) AS refresh_facts,
       statement_timestamp() AS now,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('command_id', cancels.id, 'signed', cancels.cancel_signed)),
                        '[]'::jsonb)
          FROM cancels) AS cancels,
       CASE WHEN NOT EXISTS (SELECT 1 FROM claimed)
            THEN EXISTS (SELECT 1 FROM commands f
                          WHERE f.agent_id = $1 AND f.status IN ('sent', 'running'))
       END AS in_flight,
       CASE WHEN NOT EXISTS (SELECT 1 FROM claimed)
            THEN (SELECT max(r.sent_at) FROM commands r
                   WHERE r.agent_id = $1 AND r.sent_at IS NOT NULL)
       END AS last_sent_at,
       claimed.*
  FROM agent
  LEFT JOIN claimed ON true
 ORDER BY claimed.priority DESC, claimed.created_at, claimed.id
"""

# --- ack and result (agent) -------------------------------------------------------------

# sent -> running, in one statement guarded by the agent being active and by the command
# being live for it:
# - an ack never starts a command past expires_at (it becomes expired here) nor one whose
#   lease lapsed with its retries used up (timed_out here), whenever the reaper last ran;
# - a repeated or racing ack for a running command updates it to what it is: the UPDATE
#   waits for the first ack's row lock and answers from the row as it is after it, so
#   every answer for a running command says running (the row as the statement began
#   would still say sent);
# - the run deadline goes into visible_at for the reaper.
# A final or pending command matches nothing and is answered from `current`.
ACK = f"""
WITH agent AS MATERIALIZED (
    SELECT status FROM agents WHERE id = $1
), current AS MATERIALIZED (
    SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $2 AND agent_id = $1
), acked AS (
    UPDATE commands c
       SET status = CASE WHEN c.status = 'running' THEN 'running'
                         WHEN {EXPIRED} THEN 'expired'
                         WHEN {LEASE_EXHAUSTED} THEN 'timed_out'
                         ELSE 'running' END,
           acked_at = CASE WHEN c.status = 'sent' AND NOT {EXPIRED} AND NOT {LEASE_EXHAUSTED}
                           THEN statement_timestamp() ELSE c.acked_at END,
           finished_at = CASE WHEN c.status = 'sent' AND ({EXPIRED} OR {LEASE_EXHAUSTED})
                              THEN statement_timestamp() ELSE c.finished_at END,
           visible_at = CASE WHEN c.status = 'sent' AND NOT {EXPIRED} AND NOT {LEASE_EXHAUSTED}
                             THEN statement_timestamp() + make_interval(secs => c.run_timeout_s)
                             ELSE c.visible_at END
     WHERE c.id = $2 AND c.agent_id = $1 AND c.status IN ('sent', 'running')
       AND EXISTS (SELECT 1 FROM agent WHERE agent.status = 'active')
    RETURNING c.status, c.acked_at, c.finished_at
)
SELECT agent.status AS agent_status, acked.status AS new_status,
       acked.acked_at AS new_acked_at, acked.finished_at AS new_finished_at, current.*
  FROM agent
  LEFT JOIN current ON true
  LEFT JOIN acked ON true
"""

# sent|running -> succeeded|failed, guarded the same way. A result for a command that
# already ended changes nothing; the caller compares outcomes from `current`. A result the
# agent says a cancel ended ($5) makes it `cancelled` when a cancel was asked for (the agent
# acts only on signed ones); otherwise it counts as what it reports.
REPORT_RESULT = f"""
WITH agent AS MATERIALIZED (
    SELECT status FROM agents WHERE id = $1
), current AS MATERIALIZED (
    SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $2 AND agent_id = $1
), done AS (
    UPDATE commands c
       SET status = CASE WHEN $5 AND c.cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE $3 END,
           finished_at = statement_timestamp(), result = $4
     WHERE c.id = $2 AND c.agent_id = $1 AND c.status IN ('sent', 'running')
       AND EXISTS (SELECT 1 FROM agent WHERE agent.status = 'active')
    RETURNING c.status, c.finished_at, c.result
), ended AS (
    -- Whoever follows its output hears that it is complete (a CTE runs only when read).
    SELECT pg_notify('{OUTPUT_CHANNEL}', $2::text) FROM done
)
SELECT agent.status AS agent_status, done.status AS new_status,
       done.finished_at AS new_finished_at, done.result AS new_result, current.*
  FROM agent
  LEFT JOIN current ON true
  LEFT JOIN done ON true
  LEFT JOIN ended ON true
"""

# --- operator ---------------------------------------------------------------------------

# The agent check and the insert are one statement: a command is only ever queued for an
# agent that is active at that instant. ON CONFLICT on the partial unique index makes a
# repeated idempotency key insert nothing (a racing twin waits for the first to commit).
# created_at and expires_at are the instants the signature carries ($10, $11), so the
# server and the agent agree on when the command expires.
CREATE_COMMAND = f"""
WITH agent AS MATERIALIZED (
    SELECT id, status, labels @> $13 AS in_scope FROM agents WHERE id = $1
), ins AS (
    INSERT INTO commands (id, agent_id, type, params, priority, max_retries, ack_timeout_s,
                          run_timeout_s, idempotency_key, created_at, expires_at, visible_at, signed,
                          created_by_id, created_by_name, status, approvals_required, ttl_s)
    SELECT $2, agent.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, statement_timestamp(), $12, $14, $15,
           $16, $17, $18
      FROM agent
     WHERE agent.status = 'active' AND agent.in_scope
    ON CONFLICT (agent_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING {COMMAND_COLUMNS}
)
SELECT agent.status AS agent_status, agent.in_scope, ins.*
  FROM agent LEFT JOIN ins ON true
"""

GET_BY_IDEMPOTENCY_KEY = f"""
SELECT {COMMAND_COLUMNS} FROM commands WHERE agent_id = $1 AND idempotency_key = $2
"""

# Wakes long polls waiting for this agent, in every dispatch replica.
NOTIFY_NEW_COMMAND = NOTIFY_AGENT

GET_COMMAND = f"SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1"
# For an operator with a scope: the command, if its agent is within it.
GET_COMMAND_IN_SCOPE = f"""
SELECT {COMMAND_COLUMNS} FROM commands c
 WHERE c.id = $1 AND EXISTS (SELECT 1 FROM agents a WHERE a.id = c.agent_id AND a.labels @> $2)
"""

# Keyset paging, newest first: (created_at, id) < cursor, as an index condition. The first
# page passes an "infinity" cursor, and each filter combination is its own statement, so
# the generic plans dispatch pins (app.py) walk commands_newest / commands_by_agent.
# An operator with a scope gets its own statements (the last parameter: its labels), so the
# unscoped listings keep their plans.
_LIST = f"""
SELECT {COMMAND_COLUMNS}
  FROM commands
 WHERE (created_at, id) < ($1, $2) {{filters}}
 ORDER BY created_at DESC, id DESC
 LIMIT $3
"""
_IN_SCOPE = "AND agent_id IN (SELECT a.id FROM agents a WHERE a.labels @> ${n})"
LIST_COMMANDS = {
    (False, False, False): _LIST.format(filters=""),
    (True, False, False): _LIST.format(filters="AND agent_id = $4"),
    (False, True, False): _LIST.format(filters="AND status = $4"),
    (True, True, False): _LIST.format(filters="AND agent_id = $4 AND status = $5"),
    (False, False, True): _LIST.format(filters=_IN_SCOPE.format(n=4)),
    (True, False, True): _LIST.format(filters="AND agent_id = $4 " + _IN_SCOPE.format(n=5)),
    (False, True, True): _LIST.format(filters="AND status = $4 " + _IN_SCOPE.format(n=5)),
    (True, True, True): _LIST.format(filters="AND agent_id = $4 AND status = $5 " + _IN_SCOPE.format(n=6)),
}

# awaiting_approval|pending|sent -> cancelled at once: nothing runs it yet, and an ack that
# races this waits for the row lock and then finds it cancelled (the agent never starts it).
# running: a cancel is asked for ($4, signed now), handed to its agent by its polls (CLAIM's
# `cancels`); the command ends when the agent reports, or at its run timeout (the reaper).
# Asking again changes nothing (the first request, its signature and its operator stay).
# Guarded so a final command never changes.
CANCEL_COMMAND = f"""
UPDATE commands
   SET status = CASE WHEN status = 'running' THEN 'running' ELSE 'cancelled' END,
       finished_at = CASE WHEN status = 'running' THEN NULL ELSE statement_timestamp() END,
       cancel_requested_at = coalesce(cancel_requested_at, statement_timestamp()),
       cancel_visible_at = CASE WHEN status = 'running'
                                THEN coalesce(cancel_visible_at, statement_timestamp()) END,
       cancel_signed = CASE WHEN status = 'running' THEN coalesce(cancel_signed, $4) END,
       cancelled_by_id = CASE WHEN cancel_requested_at IS NULL THEN $2 ELSE cancelled_by_id END,
       cancelled_by_name = CASE WHEN cancel_requested_at IS NULL THEN $3 ELSE cancelled_by_name END
 WHERE id = $1 AND status IN ('awaiting_approval', 'pending', 'sent', 'running')
RETURNING {COMMAND_COLUMNS}
"""

# --- the reaper (commands.reap) -----------------------------------------------------------------

# Each works in batches through its own partial index, and each row is picked with
# FOR UPDATE SKIP LOCKED and re-checked by the outer guard, so every replica may run the
# reaper at once and a row a poll or an ack holds right now is simply left for next time.

# sent, ack timeout passed, retries used up -> timed_out (never delivered again).
REAP_EXHAUSTED_LEASES = f"""
UPDATE commands c
   SET status = 'timed_out', finished_at = statement_timestamp()
  FROM (SELECT c.id FROM commands c
         WHERE c.status = 'sent' AND {LEASE_EXHAUSTED}
         ORDER BY c.visible_at
         LIMIT $1
           FOR UPDATE SKIP LOCKED) AS stale
 WHERE c.id = stale.id AND c.status = 'sent'
"""

# running past run_timeout_s since the ack -> timed_out; cancelled when a cancel was asked
# for (its agent never reported: the cancel still ended it).
REAP_OVERDUE_RUNS = f"""
UPDATE commands c
   SET status = CASE WHEN c.cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE 'timed_out' END,
       finished_at = statement_timestamp()
  FROM (SELECT c.id FROM commands c
         WHERE c.status = 'running' AND {DUE}
         ORDER BY c.visible_at
         LIMIT $1
           FOR UPDATE SKIP LOCKED) AS stale
 WHERE c.id = stale.id AND c.status = 'running'
"""

# pending|sent past expires_at -> expired.
REAP_EXPIRED = f"""
UPDATE commands c
   SET status = 'expired', finished_at = statement_timestamp()
  FROM (SELECT c.id FROM commands c
         WHERE c.status IN ('pending', 'sent') AND {EXPIRED}
         ORDER BY c.expires_at
         LIMIT $1
           FOR UPDATE SKIP LOCKED) AS stale
 WHERE c.id = stale.id AND c.status IN ('pending', 'sent')
"""


# --- revoked agents (revocations.py, the reaper, the materialiser) ------------------------------
# A revoked agent never polls again: its job commands not delivered yet would wait for ever
# (or expire, and count as failures). They end cancelled, which a job counts as final.
# Commands queued to it one by one stay as they are (the operator sees them pending, and
# may cancel them). Three moments find them, one rule ends them: when auth's notification
# is heard, on the reaper's beat for a notification nobody heard, and when a large job's
# slice meets a target revoked since the job froze it. Reads a command row aliased `c`.
REVOKED_TARGET_ENDS = "status = 'cancelled', finished_at = statement_timestamp()"
UNDELIVERED_JOB_COMMAND = "(c.status = 'pending' AND c.job_id IS NOT NULL)"

# When auth notifies the revocation (within a second); the jobs they belong to move on.
# Walks commands_claimable by agent.
CANCEL_REVOKED_AGENT_JOB_COMMANDS = f"""
UPDATE commands c
   SET {REVOKED_TARGET_ENDS}
 WHERE c.agent_id = $1 AND {UNDELIVERED_JOB_COMMAND}
   AND EXISTS (SELECT 1 FROM agents a WHERE a.id = $1 AND a.status = 'revoked')
RETURNING c.job_id
"""

# The reaper's catch-up, for a notification no dispatch process heard (all down, or its
# LISTEN connection reconnecting): agents revoked within the last day, through the small
# agents_recently_revoked index, in batches, skipping rows a claim holds; the outer guard
# re-checks the row after its lock.
REAP_REVOKED_AGENTS_JOB_COMMANDS = f"""
UPDATE commands c
   SET {REVOKED_TARGET_ENDS}
  FROM (SELECT c.id FROM agents a
          JOIN commands c ON c.agent_id = a.id
         WHERE a.status = 'revoked' AND a.revoked_at > statement_timestamp() - interval '1 day'
           AND {UNDELIVERED_JOB_COMMAND}
         LIMIT $1
           FOR UPDATE OF c SKIP LOCKED) AS stale
 WHERE c.id = stale.id AND {UNDELIVERED_JOB_COMMAND}
"""

# --- jobs (jobs.py) -------------------------------------------------------------------------
# A job's commands are ordinary commands (the claim, ack, result and reaper treat them like
# any other); what is particular to jobs is here.

# What an operator sees for one target: the command's status, except that a command held
# back by the rollout window is `waiting` and one cancelled by a halt is `skipped`
# (rollout.TARGET_STATUSES). Reads a command row aliased `c`.
# Held back by the rollout window: never due until the releaser makes it so (also the
# predicate of the commands_job_waiting index, which statements must repeat to use it).
WAITING = "(c.status = 'pending' AND c.visible_at = 'infinity')"
# Not final yet: waiting, released, delivered or running.
LIVE = "(c.status IN ({}))".format(", ".join(f"'{s}'" for s in rollout.IN_WINDOW))
# The ends that count against max_failures (rollout.FAILURES).
FAILURE = "(c.status IN ({}))".format(", ".join(f"'{s}'" for s in sorted(rollout.FAILURES)))

TARGET_STATUS = f"""(CASE WHEN c.skipped THEN 'skipped'
            WHEN {WAITING} THEN 'waiting'
            ELSE c.status END)"""

JOB_COLUMNS = """id, status, selector, command, rollout, max_in_flight, max_failures,
    target_count, idempotency_key, created_at, finished_at, halted_reason, created_by_id,
    created_by_name, cancelled_by_id, cancelled_by_name, target_labels, approvals, approvals_required,
    approval_expires_at, denied_reason, materialised, schedule_id, scheduled_for"""

# The targets of a new job: active agents matching the selector, in a stable order. FOR
# SHARE: a revocation racing with the job's creation waits for it to commit, so its
# "cancel this agent's pending job commands" then sees (and cancels) the new command; the
# last_seen flush waits too, for the length of one job's transaction.
_TARGETS = """
SELECT a.id FROM agents a
 WHERE a.status = 'active' AND {match}
 ORDER BY a.id
   FOR SHARE
"""
# A large job's targets, without the lock (queries.QUEUE_JOB_TARGETS freezes them and the
# materialiser locks each slice's agents when it makes their commands).
_PICK = """
SELECT a.id FROM agents a
 WHERE a.status = 'active' AND {match}
 ORDER BY a.id
"""
# For a dry run: the same selectors, counted without locks.
_COUNT = "SELECT count(*) FROM agents a WHERE a.status = 'active' AND {match}"
_BY_LABELS, _ALL, _BY_IDS = "a.labels @> $1::jsonb", "true", "a.id = ANY($1::uuid[])"
TARGETS_BY_LABELS = _TARGETS.format(match=_BY_LABELS)  # agents_labels (GIN)
# A GIN index is read only by bitmap scans, which dispatch's sessions turn off (app.py:
# they made the claim sort); the job's transaction allows them again for its own length.
ALLOW_BITMAP_SCANS = "SET LOCAL enable_bitmapscan = on"
TARGETS_ALL_ACTIVE = _TARGETS.format(match=_ALL)
TARGETS_BY_IDS = _TARGETS.format(match=_BY_IDS)
COUNT_BY_LABELS = _COUNT.format(match=_BY_LABELS)
COUNT_ALL_ACTIVE = _COUNT.format(match=_ALL)
COUNT_BY_IDS = _COUNT.format(match=_BY_IDS)
PICK_BY_LABELS = _PICK.format(match=_BY_LABELS)
PICK_ALL_ACTIVE = _PICK.format(match=_ALL)
PICK_BY_IDS = _PICK.format(match=_BY_IDS)

# A dry run names its first targets (docs/api.md): the pick, with their hostnames, cut.
DRY_RUN_NAMES = 100


def names_of(pick_sql: str) -> str:
    return (pick_sql.replace("SELECT a.id FROM", "SELECT a.id, a.hostname FROM", 1).rstrip()
            + f"\n LIMIT {DRY_RUN_NAMES}")


# A `where` selector (services/common/where.py): labels as any label selector ($1, the
# scope's pairs included; '{}' for none), and the compiled predicate, its values all
# parameters from $2. Evaluated by the database, never by pulling agents into dispatch.
def by_where(predicate: str) -> tuple[str, str, str, str]:
    """(targets, count, pick, names) statements."""
    match = f"a.labels @> $1::jsonb AND {predicate}"
    pick = _PICK.format(match=match)
    return _TARGETS.format(match=match), _COUNT.format(match=match), pick, names_of(pick)


# Which of the ids an operator named lie outside its scope: the 403 names them.
OUT_OF_SCOPE_IDS = """
SELECT a.id::text FROM agents a WHERE a.id = ANY($1::uuid[]) AND NOT a.labels @> $2 ORDER BY 1
"""

# Which of the ids an operator named are not active agents (unknown or revoked): the 400
# names them.
NOT_ACTIVE_IDS = """
SELECT v.id::text FROM unnest($1::uuid[]) AS v(id)
 WHERE NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = v.id AND a.status = 'active')
 ORDER BY 1
"""

JOB_BY_IDEMPOTENCY_KEY = f"SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1"

# The job row. A concurrent creation with the same key waits on the unique index for the
# first to commit, then inserts nothing; the caller reads the winner and compares bodies.
CREATE_JOB = f"""
INSERT INTO jobs (id, selector, command, rollout, max_in_flight, max_failures, target_count,
                  idempotency_key, created_at, created_by_id, created_by_name, target_labels,
                  status, approvals_required, approval_expires_at, materialised, schedule_id, scheduled_for,
                  approvals)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING {JOB_COLUMNS}
"""

# The fan-out: every target's command in one statement, in the job's transaction. The first
# $12 (the window; all of them without one) are due at once, the rest wait
# (visible_at = 'infinity') for the releaser. Each command carries its own signature,
# made for its own id and agent. A job awaiting approval writes them all
# `awaiting_approval` ($16), unsigned, none due ($12 = 0).
CREATE_JOB_COMMANDS = """
INSERT INTO commands (id, agent_id, job_id, type, params, priority, max_retries, ack_timeout_s,
                      run_timeout_s, created_at, expires_at, visible_at, signed, created_by_id,
                      created_by_name, status)
SELECT t.id, t.agent_id, $3, $4, $5, $6, $7, $8, $9, $10, $11,
       CASE WHEN t.n <= $12 THEN $10 ELSE 'infinity'::timestamptz END, t.signed, $14, $15, $16
  FROM unnest($1::uuid[], $2::uuid[], $13::jsonb[]) WITH ORDINALITY AS t(id, agent_id, signed, n)
"""

# --- large jobs, materialised in slices (services/dispatch/materialiser.py) ----------------

# A large job's targets, frozen in the job's transaction, in order.
QUEUE_JOB_TARGETS = """
INSERT INTO job_targets (job_id, seq, agent_id)
SELECT $1, t.n, t.agent_id FROM unnest($2::uuid[]) WITH ORDINALITY AS t(agent_id, n)
"""

# The oldest running job with targets left, locked (NO KEY UPDATE, as LOCK_RUNNING_JOB:
# a slice, a release, a cancel or a halt of one job happen one at a time, in any
# replica), skipping one another replica is materialising: two never make the same slice.
LOCK_MATERIALISING_JOB = f"""
SELECT {JOB_COLUMNS} FROM jobs
 WHERE status = 'running' AND materialised < target_count
 ORDER BY created_at
 LIMIT 1
   FOR NO KEY UPDATE SKIP LOCKED
"""

# The next slice of a job's frozen targets, taken off the queue, with each agent's status
# now (FOR SHARE: a revocation racing with the slice waits for it to commit, and then its
# cancellation of the agent's undelivered commands sees the new one).
TAKE_JOB_TARGETS = """
WITH taken AS (
    DELETE FROM job_targets
     WHERE job_id = $1 AND seq IN (SELECT seq FROM job_targets WHERE job_id = $1 ORDER BY seq LIMIT $2)
    RETURNING seq, agent_id
)
SELECT t.agent_id, a.status
  FROM taken t JOIN agents a ON a.id = t.agent_id  -- agents are never deleted, only revoked
 ORDER BY t.seq
   FOR SHARE OF a
"""

# The slice made: the job's count moves on in the slice's transaction.
MATERIALISED = "UPDATE jobs SET materialised = materialised + $2 WHERE id = $1"

# Targets revoked after the job froze them: their commands, just made, end cancelled at
# once (in the slice's transaction).
CANCEL_REVOKED_TARGETS = f"""
UPDATE commands c SET {REVOKED_TARGET_ENDS}
 WHERE c.job_id = $1 AND c.agent_id = ANY($2::uuid[]) AND {UNDELIVERED_JOB_COMMAND}
"""

# A cancelled or halted job's targets not materialised yet: never will be.
DROP_JOB_TARGETS = "DELETE FROM job_targets WHERE job_id = $1"

# The approval policy's label rules ($2) a job's targets ($1) carry: one answer per rule,
# in order (a GIN probe of agents_labels within the targets each).
LABEL_RULES_CARRIED = """
SELECT coalesce(array_agg(EXISTS (SELECT 1 FROM agents a WHERE a.id = ANY($1::uuid[]) AND a.labels @> r.labels)
                          ORDER BY r.n), '{}')
  FROM unnest($2::jsonb[]) WITH ORDINALITY AS r(labels, n)
"""

# Wakes the held polls of every agent given, in every replica, on commit: one notification
# per WAKE_BATCH agents (services/common/db.py).
NOTIFY_AGENTS = _NOTIFY_AGENTS

# A job is within an operator's scope when every target is known to carry its labels
# (target_labels, fixed at creation; '{}' for an unscoped operator covers every job).
GET_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND target_labels @> $2"

# Serializes everything that moves one job on (advance, cancel), in every replica: taken
# first in their transactions, so each statement after it sees what the previous holder
# committed (READ COMMITTED takes a new snapshot per statement). Without it two releasers
# could both count the same free slots and over-release. NO KEY UPDATE does not block the
# foreign-key checks of commands referencing the job.
LOCK_RUNNING_JOB = f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND status = 'running' FOR NO KEY UPDATE
"""
# The same, for what may still be cancelled: running, or awaiting approval.
LOCK_LIVE_JOB = f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND status IN ('awaiting_approval', 'running') FOR NO KEY UPDATE
"""

# Counts by target status for some jobs: per job, an index-only scan of its entries in
# commands_job_status (a LATERAL per job: with `job_id = ANY($1)` the generic plan reads
# the whole table). Run after JOB_INDEX_ONLY.
# A job's counts must cost what the job holds, never the table; but the generic plan
# estimates every job at the table's job rows over the jobs it has seen, so with few jobs
# the planner reads the whole table once per job listed (seen in CI: one job in a tenth of
# the table was a coin toss between the two). The counts' transaction forbids that.
JOB_INDEX_ONLY = "SET LOCAL enable_seqscan = off"
# Targets not materialised yet count as `waiting` while the job runs, as `cancelled` or
# `skipped` once it was cancelled or halted: the counts add up to target_count at every
# instant.
JOB_COUNTS = f"""
SELECT j.id AS job_id, t.status, t.n
  FROM unnest($1::uuid[]) AS j(id)
 CROSS JOIN LATERAL (
    SELECT {TARGET_STATUS} AS status, count(*)::int AS n
      FROM commands c
     WHERE c.job_id = j.id AND c.job_id IS NOT NULL  -- (proves the partial index applies)
     GROUP BY 1
 ) AS t
UNION ALL
SELECT jobs.id, CASE jobs.status WHEN 'cancelled' THEN 'cancelled' WHEN 'halted' THEN 'skipped'
                                 ELSE 'waiting' END, jobs.target_count - jobs.materialised
  FROM jobs
 WHERE jobs.id = ANY($1::uuid[]) AND jobs.materialised < jobs.target_count
"""

# What moving a job on needs (rollout.Progress), each part bounded whatever the job's size,
# on commands_job_status: whether any target is unfinished, or waiting (the first entry
# found answers); the window's occupants (at most the window, and read only when the job
# has one: $2); failures counted only up to $3 (max_failures + 1: enough to know it was
# exceeded; NULL when the job has no limit). Scalar subqueries under a CASE not taken
# are never run.
JOB_PROGRESS = f"""
SELECT EXISTS (SELECT 1 FROM commands c WHERE c.job_id = $1 AND {LIVE})
       OR EXISTS (SELECT 1 FROM jobs j WHERE j.id = $1 AND j.materialised < j.target_count) AS unfinished,
       EXISTS (SELECT 1 FROM commands c WHERE c.job_id = $1 AND {WAITING}) AS waiting,
       CASE WHEN $2 THEN (SELECT count(*) FROM commands c
                           WHERE c.job_id = $1 AND {LIVE} AND c.visible_at <> 'infinity')
            ELSE 0 END AS in_window,
       CASE WHEN $3::int IS NOT NULL THEN (SELECT count(*) FROM (
                SELECT 1 FROM commands c WHERE c.job_id = $1 AND {FAILURE} LIMIT $3) AS f)
            ELSE 0 END AS failures,
       CASE WHEN $4::int IS NOT NULL THEN (SELECT count(*) FROM (
                SELECT 1 FROM commands c WHERE c.job_id = $1 AND c.status = 'succeeded' LIMIT $4) AS s)
            ELSE 0 END AS succeeded
"""

# The sliding window: make the next $2 waiting commands due now, and wake their agents.
# Run under LOCK_RUNNING_JOB, which decided $2 from counts read after the lock. The
# status guard leaves a waiting command that was cancelled or expired meanwhile alone.
RELEASE_WAITING = f"""
WITH next AS (
    SELECT c.id FROM commands c
     WHERE c.job_id = $1 AND {WAITING}
     ORDER BY c.id
     LIMIT $2
       FOR NO KEY UPDATE
), released AS (
    UPDATE commands c
       SET visible_at = statement_timestamp()
      FROM next
     WHERE c.id = next.id AND {WAITING}
    RETURNING c.agent_id
)
SELECT pg_notify('{AGENT_CHANNEL}', string_agg(agent_id::text, ',')) FROM (
    SELECT agent_id, (row_number() OVER () - 1) / {WAKE_BATCH} AS batch FROM released
) woken
 GROUP BY batch
"""

# running -> completed | halted | cancelled, awaiting_approval -> cancelled; the status
# guard makes each happen once.
END_JOB = f"""
UPDATE jobs
   SET status = $2, finished_at = statement_timestamp(), halted_reason = $3,
       cancelled_by_id = $4, cancelled_by_name = $5
 WHERE id = $1 AND status IN ('awaiting_approval', 'running')
RETURNING {JOB_COLUMNS}
"""

# What a job's halt or cancel stops: every command of it not delivered yet (waiting or
# pending). A claim holding such a row right now wins (it is delivered, and finishes); the
# guard re-checks the status after waiting for its lock.
CANCEL_UNDELIVERED = """
UPDATE commands
   SET status = 'cancelled', skipped = $2, finished_at = statement_timestamp(),
       cancelled_by_id = $3, cancelled_by_name = $4
 WHERE job_id = $1 AND status IN ('awaiting_approval', 'pending')
"""

# A job's cancel reaches what was delivered too (docs/api.md, cancelling a running command):
# its sent commands end at once (a racing ack waits for the row lock, then finds them
# cancelled), then its running ones are found and each gets a signed cancel, as one
# command's cancel does (CANCEL_COMMAND). Run in the job's cancel transaction, after
# CANCEL_UNDELIVERED, in this order: a command acked before the first statement took its
# lock is running when the second looks.
CANCEL_SENT_OF_JOB = """
UPDATE commands
   SET status = 'cancelled', finished_at = statement_timestamp(),
       cancel_requested_at = statement_timestamp(), cancelled_by_id = $2, cancelled_by_name = $3
 WHERE job_id = $1 AND status = 'sent'
"""
RUNNING_OF_JOB = "SELECT id, agent_id FROM commands WHERE job_id = $1 AND status = 'running'"
REQUEST_CANCELS = """
UPDATE commands c
   SET cancel_requested_at = coalesce(c.cancel_requested_at, statement_timestamp()),
       cancel_visible_at = coalesce(c.cancel_visible_at, statement_timestamp()),
       cancel_signed = coalesce(c.cancel_signed, asked.signed),
       cancelled_by_id = CASE WHEN c.cancel_requested_at IS NULL THEN $2 ELSE c.cancelled_by_id END,
       cancelled_by_name = CASE WHEN c.cancel_requested_at IS NULL THEN $3 ELSE c.cancelled_by_name END
  FROM unnest($4::uuid[], $5::jsonb[]) AS asked(id, signed)
 WHERE c.id = asked.id AND c.job_id = $1 AND c.status = 'running'
RETURNING c.agent_id
"""

RUNNING_JOBS = "SELECT id FROM jobs WHERE status = 'running' ORDER BY created_at"

_JOB_PAGE = f"""
SELECT {JOB_COLUMNS}
  FROM jobs
 WHERE (created_at, id) < ($1, $2) {{filters}}
 ORDER BY created_at DESC, id DESC
 LIMIT $3
"""
LIST_JOBS = {False: _JOB_PAGE.format(filters="AND target_labels @> $4"),
             True: _JOB_PAGE.format(filters="AND target_labels @> $4 AND status = $5")}

# One job's targets, by agent id descending (`before` is the last agent id of a page), on
# commands_job_target; a status filter reads the rows it walks.
_TARGET_PAGE = f"""
SELECT c.agent_id, a.hostname, c.id AS command_id, {TARGET_STATUS} AS status, c.result
  FROM commands c JOIN agents a ON a.id = c.agent_id
 WHERE c.job_id = $1 AND c.agent_id < $2 {{filters}}
 ORDER BY c.agent_id DESC
 LIMIT $3
"""
LIST_TARGETS = {False: _TARGET_PAGE.format(filters=""),
                True: _TARGET_PAGE.format(filters=f"AND {TARGET_STATUS} = $4")}

# --- approvals (approvals.py) -------------------------------------------------------------------

# The fleet's one policy row (migration 0010), read through a 5 s cache.
APPROVAL_POLICY = "SELECT rules, approvals, expires_in_s, updated_at, updated_by_name FROM approval_policy"
SET_APPROVAL_POLICY = """
UPDATE approval_policy
   SET rules = $1, approvals = $2, expires_in_s = $3, updated_at = statement_timestamp(), updated_by_name = $4
RETURNING rules, approvals, expires_in_s, updated_at, updated_by_name
"""

# A request an operator decides on, locked: two approvers racing for the last approval
# take turns here, so the second sees what the first did (READ COMMITTED, a new snapshot
# per statement) and a request starts once. NO KEY UPDATE: the delivery ledger's foreign
# keys are not blocked. The command carries its agent's labels for the scope check.
LOCK_COMMAND_FOR_DECISION = f"""
SELECT {COMMAND_COLUMNS}, c.ttl_s, (SELECT a.labels FROM agents a WHERE a.id = c.agent_id) AS agent_labels
  FROM commands c WHERE c.id = $1 FOR NO KEY UPDATE OF c
"""
LOCK_JOB_FOR_DECISION = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 FOR NO KEY UPDATE"

# Whether a job has a target outside an approver's scope (one is enough to refuse).
JOB_TARGET_OUTSIDE = """
SELECT EXISTS (SELECT 1 FROM commands c JOIN agents a ON a.id = c.agent_id
                WHERE c.job_id = $1 AND c.job_id IS NOT NULL AND NOT a.labels @> $2)
"""

# One more approval, not enough yet; the status guard: only while it awaits.
ADD_COMMAND_APPROVAL = f"""
UPDATE commands SET approvals = $2 WHERE id = $1 AND status = 'awaiting_approval' RETURNING {COMMAND_COLUMNS}
"""
ADD_JOB_APPROVAL = f"""
UPDATE jobs SET approvals = $2 WHERE id = $1 AND status = 'awaiting_approval' RETURNING {JOB_COLUMNS}
"""

# awaiting_approval -> pending: signed now (the payload names its approvers), its TTL
# counted from now, due now. The claim statement needs no change: it reads pending rows.
START_APPROVED_COMMAND = f"""
UPDATE commands
   SET status = 'pending', approvals = $2, signed = $3, expires_at = $4, visible_at = statement_timestamp()
 WHERE id = $1 AND status = 'awaiting_approval'
RETURNING {COMMAND_COLUMNS}
"""

# A job's targets to sign when it is approved, in the releaser's order (commands_job_target).
AWAITING_JOB_COMMANDS = """
SELECT id, agent_id FROM commands WHERE job_id = $1 AND job_id IS NOT NULL AND status = 'awaiting_approval'
 ORDER BY id
"""
START_APPROVED_JOB = f"""
UPDATE jobs SET status = 'running', approvals = $2 WHERE id = $1 AND status = 'awaiting_approval'
RETURNING {JOB_COLUMNS}
"""
# Every target signed; the first $5 (the window; all without one) due now, the rest waiting.
START_JOB_COMMANDS = """
UPDATE commands c
   SET status = 'pending', signed = t.signed, expires_at = $4,
       visible_at = CASE WHEN t.n <= $5 THEN statement_timestamp() ELSE 'infinity'::timestamptz END
  FROM unnest($2::uuid[], $3::jsonb[]) WITH ORDINALITY AS t(id, signed, n)
 WHERE c.id = t.id AND c.job_id = $1 AND c.status = 'awaiting_approval'
"""

# awaiting_approval -> denied ($2: `denied` or `approval_expired`), final.
DENY_COMMAND = f"""
UPDATE commands SET status = 'denied', denied_reason = $2, finished_at = statement_timestamp()
 WHERE id = $1 AND status = 'awaiting_approval'
RETURNING {COMMAND_COLUMNS}
"""
DENY_JOB = f"""
UPDATE jobs SET status = 'denied', denied_reason = $2, finished_at = statement_timestamp()
 WHERE id = $1 AND status = 'awaiting_approval'
RETURNING {JOB_COLUMNS}
"""
DENY_JOB_COMMANDS = """
UPDATE commands SET status = 'denied', denied_reason = $2, finished_at = statement_timestamp()
 WHERE job_id = $1 AND job_id IS NOT NULL AND status = 'awaiting_approval'
"""

# The reaper: requests whose approval deadline passed -> denied (approval_expired), in
# batches through their partial indexes, SKIP LOCKED (an approver holding one right now
# decides it first; the guard re-checks). A job goes with its commands, in one statement.
EXPIRE_AWAITING_JOBS = """
WITH due AS (
    SELECT id FROM jobs
     WHERE status = 'awaiting_approval' AND approval_expires_at <= statement_timestamp()
     ORDER BY approval_expires_at LIMIT $1
       FOR NO KEY UPDATE SKIP LOCKED
), ended AS (
    UPDATE jobs j SET status = 'denied', denied_reason = 'approval_expired', finished_at = statement_timestamp()
      FROM due WHERE j.id = due.id AND j.status = 'awaiting_approval'
    RETURNING j.id
), commands_denied AS (
    UPDATE commands c SET status = 'denied', denied_reason = 'approval_expired', finished_at = statement_timestamp()
     WHERE c.job_id IN (SELECT id FROM ended) AND c.status = 'awaiting_approval'
)
SELECT count(*) FROM ended
"""
EXPIRE_AWAITING_COMMANDS = """
WITH due AS (
    SELECT id FROM commands
     WHERE status = 'awaiting_approval' AND job_id IS NULL AND expires_at <= statement_timestamp()
     ORDER BY expires_at LIMIT $1
       FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE commands c SET status = 'denied', denied_reason = 'approval_expired', finished_at = statement_timestamp()
  FROM due WHERE c.id = due.id AND c.status = 'awaiting_approval'
"""


# --- schedules (schedules.py) ---------------------------------------------------------------

_SCHEDULE_COLUMNS = ("id", "name", "selector", "command", "rollout", "cron", "timezone", "interval_s", "anchor_at",
                     "overlap", "catch_up", "status", "paused_reason", "next_run_at", "created_at", "updated_at",
                     "created_by_id", "created_by_name", "approvals", "approvals_required", "denied_reason")
SCHEDULE_COLUMNS = ", ".join(_SCHEDULE_COLUMNS)
# The newest run of each schedule comes with it (the listing shows it): one index probe each.
_SCHEDULE_WITH_LAST_RUN = f"""
SELECT {", ".join(f"s.{c}" for c in _SCHEDULE_COLUMNS)},
       r.scheduled_for AS last_scheduled_for, r.started_at AS last_started_at, r.job_id AS last_job_id,
       r.outcome AS last_outcome, r.detail AS last_detail, j.status AS last_job_status
  FROM schedules s
  LEFT JOIN LATERAL (SELECT * FROM schedule_runs x WHERE x.schedule_id = s.id
                      ORDER BY x.scheduled_for DESC LIMIT 1) r ON true
  LEFT JOIN jobs j ON j.id = r.job_id
"""
GET_SCHEDULE = _SCHEDULE_WITH_LAST_RUN + " WHERE s.id = $1"
LIST_SCHEDULES = _SCHEDULE_WITH_LAST_RUN + " WHERE s.name > $1 ORDER BY s.name LIMIT $2"

# A name is unique: a second schedule of that name inserts nothing (the caller says 409).
CREATE_SCHEDULE = """
INSERT INTO schedules (id, name, selector, command, rollout, cron, timezone, interval_s, anchor_at,
                       overlap, catch_up, status, paused_reason, next_run_at, created_at, updated_at,
                       created_by_id, created_by_name, approvals_required)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, statement_timestamp(),
        statement_timestamp(), $15, $16, $17)
ON CONFLICT (name) DO NOTHING
RETURNING id
"""

# Every change of a schedule takes its row lock first: a tick in progress (which holds it)
# finishes before the change, and the change's next_run_at is the one the next tick reads.
LOCK_SCHEDULE = f"SELECT {SCHEDULE_COLUMNS}, statement_timestamp() AS now FROM schedules WHERE id = $1 FOR UPDATE"

# A PATCH, whole: the caller computed every column from the row it locked.
UPDATE_SCHEDULE = """
UPDATE schedules
   SET name = $2, selector = $3, command = $4, rollout = $5, cron = $6, timezone = $7, interval_s = $8,
       anchor_at = $9, overlap = $10, catch_up = $11, status = $12, paused_reason = $13, next_run_at = $14,
       approvals = $15, approvals_required = $16, updated_at = statement_timestamp()
 WHERE id = $1
"""
NAME_TAKEN = "SELECT EXISTS (SELECT 1 FROM schedules WHERE name = $1 AND id <> $2)"
DELETE_SCHEDULE = "DELETE FROM schedules WHERE id = $1 RETURNING id"

# The ticker's look: due schedules, oldest tick first. Read without locks; each is then
# taken by LOCK_DUE_SCHEDULE.
DUE_SCHEDULES = """
SELECT id FROM schedules
 WHERE status = 'active' AND next_run_at <= statement_timestamp()
 ORDER BY next_run_at
 LIMIT $1
"""
# One schedule's tick: SKIP LOCKED, so a replica already ticking it (or an operator changing
# it) is left alone; the guard is read again under the lock, so a tick another replica
# finished meanwhile (next_run_at moved on) is not ticked twice.
LOCK_DUE_SCHEDULE = f"""
SELECT {SCHEDULE_COLUMNS}, statement_timestamp() AS now FROM schedules
 WHERE id = $1 AND status = 'active' AND next_run_at <= statement_timestamp()
   FOR UPDATE SKIP LOCKED
"""
SET_NEXT_RUN = "UPDATE schedules SET next_run_at = $2 WHERE id = $1"
PAUSE_SCHEDULE = """
UPDATE schedules SET status = 'paused', paused_reason = $2, updated_at = statement_timestamp() WHERE id = $1
"""

# Which replica starts a tick: the run's primary key (schedule_id, scheduled_for). Inserted
# in the tick's transaction, with its job: nothing, if this tick already happened.
INSERT_RUN = """
INSERT INTO schedule_runs (schedule_id, scheduled_for, started_at, job_id, outcome, detail)
VALUES ($1, $2, statement_timestamp(), $3, $4, $5)
ON CONFLICT (schedule_id, scheduled_for) DO NOTHING
RETURNING scheduled_for
"""
SET_RUN = "UPDATE schedule_runs SET job_id = $3, outcome = $4, detail = $5 WHERE schedule_id = $1 AND scheduled_for = $2"
RUNS_PAGE = """
SELECT r.scheduled_for, r.started_at, r.job_id, r.outcome, r.detail
  FROM schedule_runs r
 WHERE r.schedule_id = $1 AND r.scheduled_for < $2
 ORDER BY r.scheduled_for DESC
 LIMIT $3
"""

# The overlap rule: is the schedule's newest job still live (running or awaiting approval)?
LAST_JOB_LIVE = """
SELECT j.status IN ('running', 'awaiting_approval') FROM jobs j
 WHERE j.schedule_id = $1 ORDER BY j.created_at DESC LIMIT 1
"""

# The creator's authority, as it is now (auth's table, read only).
OPERATOR_BY_ID = "SELECT id, name, role, scope, disabled_at FROM operators WHERE id = $1"

# Approvals of a schedule: as for a job (approvals.py).
LOCK_SCHEDULE_FOR_DECISION = LOCK_SCHEDULE
SCHEDULE_DECIDED = """
UPDATE schedules SET approvals = $2, status = $3, next_run_at = $4, denied_reason = $5,
       updated_at = statement_timestamp()
 WHERE id = $1
"""

# An upgrade's targets ($1) with the release of version $2 for each one's platform (its
# registration's os-arch), or NULLs where there is none: signed into each payload.
UPGRADE_RELEASES = """
SELECT a.id, r.sha256, r.size
  FROM agents a
  LEFT JOIN agent_releases r ON r.version = $2 AND r.platform = a.os || '-' || a.arch
 WHERE a.id = ANY($1::uuid[])
"""
