"""The statements of webhooks (migrations/0020.webhooks.sql)."""

_ENDPOINT = """id, url, events, description, enabled, disabled_reason, created_at, created_by, updated_at,
       previous_secret_until"""

CREATE_ENDPOINT = f"""
INSERT INTO webhook_endpoints (id, url, events, description, secret, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {_ENDPOINT}
"""

LIST_ENDPOINTS = f"SELECT {_ENDPOINT} FROM webhook_endpoints ORDER BY created_at, id"

GET_ENDPOINT = f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE id = $1"

# A PATCH: each field given ($2-$5; NULL leaves it), a new secret ($6) with the old one
# kept for signing until $7. Re-enabling clears the reason it was disabled.
UPDATE_ENDPOINT = f"""
UPDATE webhook_endpoints
   SET url = coalesce($2, url), events = coalesce($3, events), description = coalesce($4, description),
       enabled = coalesce($5, enabled),
       disabled_reason = CASE WHEN $5 IS TRUE THEN NULL ELSE disabled_reason END,
       previous_secret = CASE WHEN $6::text IS NULL THEN previous_secret ELSE secret END,
       previous_secret_until = CASE WHEN $6::text IS NULL THEN previous_secret_until ELSE $7 END,
       secret = coalesce($6, secret), updated_at = statement_timestamp()
 WHERE id = $1
RETURNING {_ENDPOINT}
"""

DELETE_ENDPOINT = "DELETE FROM webhook_endpoints WHERE id = $1 RETURNING id, url"

# The sender's claim: due deliveries of enabled endpoints, oldest first. SKIP LOCKED: two
# replicas take different ones; the lease ($2 s, past the attempt's timeout) makes a
# delivery whose sender died due again, to be sent with the same id.
CLAIM_DUE = """
WITH due AS (
    SELECT d.id FROM webhook_deliveries d
     WHERE d.status = 'pending' AND d.next_attempt_at <= statement_timestamp()
     ORDER BY d.next_attempt_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
   SET attempts = d.attempts + 1, last_attempt_at = statement_timestamp(),
       next_attempt_at = statement_timestamp() + make_interval(secs => $2)
  FROM due, webhook_endpoints e
 WHERE d.id = due.id AND e.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.body, d.attempts, e.url, e.enabled, e.secret,
          CASE WHEN e.previous_secret_until > statement_timestamp() THEN e.previous_secret END AS previous_secret
"""

# An attempt's end. The attempts guard: a delivery taken again after its lease ran out
# (this sender was slow, not dead) is recorded by the newer attempt only.
RECORD_ATTEMPT = """
UPDATE webhook_deliveries
   SET status = $3, next_attempt_at = CASE WHEN $3 = 'pending' THEN statement_timestamp() + make_interval(secs => $4)
                                            ELSE next_attempt_at END,
       delivered_at = CASE WHEN $3 = 'delivered' THEN statement_timestamp() END,
       status_code = $5, latency_ms = $6, error = $7
 WHERE id = $1 AND attempts = $2 AND status = 'pending'
"""

DISABLE_ENDPOINT = """
UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = statement_timestamp()
 WHERE id = $1 AND enabled
"""

# A listing of one endpoint's deliveries, newest first, after the cursor ($4, $5).
LIST_DELIVERIES = """
SELECT id, event_type, status, attempts, created_at, last_attempt_at, delivered_at, next_attempt_at,
       status_code, latency_ms, error
  FROM webhook_deliveries
 WHERE endpoint_id = $1 AND ($2::text IS NULL OR status = $2)
   AND (created_at, id) < ($4, $5)
 ORDER BY created_at DESC, id DESC
 LIMIT $3
"""

# Retry now: a failed (or pending) delivery due again, its attempts counted afresh.
RETRY_DELIVERY = """
UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = statement_timestamp(), attempts = 0
 WHERE id = $1 AND endpoint_id = $2 AND status <> 'delivered'
RETURNING id
"""

DELIVERY_EXISTS = "SELECT status FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2"

# The outbox's oldest due delivery, in seconds (0: none): what the metric shows.
OLDEST_DUE_S = """
SELECT coalesce(extract(epoch FROM statement_timestamp() - min(next_attempt_at)), 0)::float
  FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= statement_timestamp()
"""

# The presence sweep, one statement per interval: agents whose presence differs from what
# their last_seen_at says now (seen within $1 s: online) take the new one. Only those are
# locked (the condition is checked before the lock and again after it), SKIP LOCKED so two
# replicas never flip one agent twice; an agent seen by a sweep for the first time (NULL)
# only learns its state; one never seen has none. Each change emits agent.online or agent.offline.
PRESENCE_SWEEP = """
WITH changing AS (
    SELECT a.id, a.presence AS was
      FROM agents a
     WHERE a.status = 'active'
       AND a.presence IS DISTINCT FROM (CASE WHEN a.last_seen_at IS NULL THEN NULL
                                             WHEN a.last_seen_at >= statement_timestamp() - make_interval(secs => $1)
                                             THEN 'online' ELSE 'offline' END)
       FOR UPDATE SKIP LOCKED
), flipped AS (
    UPDATE agents a
       SET presence = CASE WHEN a.last_seen_at IS NULL THEN NULL
                           WHEN a.last_seen_at >= statement_timestamp() - make_interval(secs => $1)
                           THEN 'online' ELSE 'offline' END
      FROM changing c
     WHERE a.id = c.id
    RETURNING a.presence, c.was, webhook_agent(a) AS agent
)
SELECT count(*) FILTER (WHERE was IS NOT NULL) AS changed,
       coalesce(sum(webhook_emit('agent.' || presence, agent)) FILTER (WHERE was IS NOT NULL), 0) AS deliveries
  FROM flipped
"""

# How many active agents the last sweeps found offline (the alert's metric).
OFFLINE_AGENTS = "SELECT count(*) FROM agents WHERE status = 'active' AND presence = 'offline'"
