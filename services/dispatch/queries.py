"""Every SQL statement of the dispatch service, one by one, with why each lock and guard
is there. `commands.py` runs them and decides what their answers mean; each lifecycle
rule below is one named fragment, written once and used wherever it applies.

Rules every statement here follows (River, Oban, pg-boss, graphile-worker):
- State changes are guarded by the state they expect (`AND status IN (...)`); zero rows
  updated means a duplicate or stale request, which the caller answers idempotently.
- Times are `statement_timestamp()`, never `now()` (a transaction's start).
- Each statement runs on its own (autocommit): no transaction is held across a round trip.
"""

from services.common.db import NOTIFY_AGENT

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

# The columns of the command state object (API.md), shared by every statement below.
COMMAND_COLUMNS = """id, agent_id, type, params, status, priority, retry_count, max_retries,
    delivery_count, ack_timeout_s, run_timeout_s, idempotency_key, created_at, sent_at,
    acked_at, finished_at, expires_at, result, signed"""

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
# An empty poll is therefore: the agent's primary key, one probe of commands_claimable,
# and two probes of small partial indexes (commands_in_flight, commands_recent_delivery);
# tests/integration/test_dispatch_plans.py checks the plan has no sequential scan and no sort.
CLAIM = f"""
WITH agent AS MATERIALIZED (
    SELECT status FROM agents WHERE id = $1
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
)
SELECT agent.status AS agent_status,
       statement_timestamp() AS now,
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

# Batched last_seen_at (see last_seen.py): one statement per flush for every agent seen
# since the last one, instead of one write per poll. Ids are sorted by the caller so two
# replicas flushing at once lock rows in the same order (no deadlock); GREATEST keeps a
# late flush from moving the time backwards.
TOUCH_AGENTS = """
UPDATE agents a
   SET last_seen_at = GREATEST(a.last_seen_at, v.seen)
  FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, seen)
 WHERE a.id = v.id
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
# already ended changes nothing; the caller compares outcomes from `current`.
REPORT_RESULT = f"""
WITH agent AS MATERIALIZED (
    SELECT status FROM agents WHERE id = $1
), current AS MATERIALIZED (
    SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $2 AND agent_id = $1
), done AS (
    UPDATE commands c
       SET status = $3, finished_at = statement_timestamp(), result = $4
     WHERE c.id = $2 AND c.agent_id = $1 AND c.status IN ('sent', 'running')
       AND EXISTS (SELECT 1 FROM agent WHERE agent.status = 'active')
    RETURNING c.status, c.finished_at, c.result
)
SELECT agent.status AS agent_status, done.status AS new_status,
       done.finished_at AS new_finished_at, done.result AS new_result, current.*
  FROM agent
  LEFT JOIN current ON true
  LEFT JOIN done ON true
"""

# --- operator ---------------------------------------------------------------------------

# The agent check and the insert are one statement: a command is only ever queued for an
# agent that is active at that instant. ON CONFLICT on the partial unique index makes a
# repeated idempotency key insert nothing (a racing twin waits for the first to commit).
# created_at and expires_at are the instants the signature carries ($10, $11), so the
# server and the agent agree on when the command expires.
CREATE_COMMAND = f"""
WITH agent AS MATERIALIZED (
    SELECT id, status FROM agents WHERE id = $1
), ins AS (
    INSERT INTO commands (id, agent_id, type, params, priority, max_retries, ack_timeout_s,
                          run_timeout_s, idempotency_key, created_at, expires_at, visible_at, signed)
    SELECT $2, agent.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, statement_timestamp(), $12
      FROM agent
     WHERE agent.status = 'active'
    ON CONFLICT (agent_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING {COMMAND_COLUMNS}
)
SELECT agent.status AS agent_status, ins.*
  FROM agent LEFT JOIN ins ON true
"""

GET_BY_IDEMPOTENCY_KEY = f"""
SELECT {COMMAND_COLUMNS} FROM commands WHERE agent_id = $1 AND idempotency_key = $2
"""

# After the LISTEN connection was re-established (listener.py): which of the agents parked
# in this process got a command during the gap. One statement for all of them, on
# commands_claimable; the woken polls claim as usual.
CATCH_UP = f"""
SELECT DISTINCT c.agent_id::text
  FROM commands c
 WHERE c.agent_id = ANY($1::uuid[])
   AND c.status IN ('pending', 'sent') AND {DUE}
"""

# The look-ahead sweep (lease_sweep.py): leases of any replica coming due within $1 s
# (or gone due within the last $1 s), per agent, so a parked poll wakes for its
# redelivery without polling the table itself. A range scan of commands_deadline: its cost
# follows the leases coming due, not the number of idle agents.
LEASES_COMING_DUE = """
SELECT c.agent_id::text AS agent_id,
       EXTRACT(EPOCH FROM min(c.visible_at) - statement_timestamp())::float8 AS due_in_s
  FROM commands c
 WHERE c.status = 'sent'
   AND c.visible_at > statement_timestamp() - make_interval(secs => $1)
   AND c.visible_at <= statement_timestamp() + make_interval(secs => $1)
 GROUP BY c.agent_id
"""

# --- keysets ----------------------------------------------------------------------------

CURRENT_KEYSET = "SELECT version, document FROM command_keysets ORDER BY version DESC LIMIT 1"

# Only above every version there is: an older keyset (a replay) inserts nothing. Two
# uploads racing with the same version: the primary key lets one win.
INSTALL_KEYSET = """
INSERT INTO command_keysets (version, document, expires_at)
SELECT $1, $2, $3
 WHERE NOT EXISTS (SELECT 1 FROM command_keysets WHERE version >= $1)
ON CONFLICT (version) DO NOTHING
RETURNING version
"""

# Wakes long polls waiting for this agent, in every dispatch replica.
NOTIFY_NEW_COMMAND = NOTIFY_AGENT

GET_COMMAND = f"SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1"

# Keyset paging, newest first: (created_at, id) < cursor, as an index condition. The first
# page passes an "infinity" cursor, and each filter combination is its own statement, so
# the generic plans dispatch pins (app.py) walk commands_newest / commands_by_agent.
_LIST = f"""
SELECT {COMMAND_COLUMNS}
  FROM commands
 WHERE (created_at, id) < ($1, $2) {{filters}}
 ORDER BY created_at DESC, id DESC
 LIMIT $3
"""
LIST_COMMANDS = {
    (False, False): _LIST.format(filters=""),
    (True, False): _LIST.format(filters="AND agent_id = $4"),
    (False, True): _LIST.format(filters="AND status = $4"),
    (True, True): _LIST.format(filters="AND agent_id = $4 AND status = $5"),
}

# pending|sent|running -> cancelled; guarded so a final command never changes.
CANCEL_COMMAND = f"""
UPDATE commands
   SET status = 'cancelled', finished_at = statement_timestamp()
 WHERE id = $1 AND status IN ('pending', 'sent', 'running')
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

# running past run_timeout_s since the ack -> timed_out.
REAP_OVERDUE_RUNS = f"""
UPDATE commands c
   SET status = 'timed_out', finished_at = statement_timestamp()
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
