"""The statements of the agent-facing room: an agent seen (last_seen.py), its credentials'
first use (first_use.py) and its facts. Commands are the lifecycle's
(services/dispatch/lifecycle/queries.py)."""

# An agent's facts, replaced whole by its report; only an active agent's (a revoked one's
# still-valid access token writes nothing: the caller answers 403 agent_revoked).
# The agent's version follows its reports ($3, NULL when a report names none), so an
# upgraded agent shows the version it runs, not the one it enrolled with.
PUT_FACTS = """
UPDATE agents SET facts = $2, facts_updated_at = statement_timestamp(), agent_version = COALESCE($3, agent_version)
 WHERE id = $1 AND status = 'active'
RETURNING facts_updated_at
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

# Before an agent request is answered, once per agent (first_use.py), for every agent seen
# while the previous write was under way: one statement, one commit. The row lock each
# mark takes orders it against a repeat registration of the machine, which locks the same
# row. Rows are locked in id order, so two replicas' batches (the same agent may reach
# both) never deadlock; IS NULL: agents marked already are neither locked nor written.
MARK_AGENTS_USED = """
WITH first AS (
    SELECT id FROM agents
     WHERE id = ANY($1::uuid[]) AND credentials_used_at IS NULL
     ORDER BY id
       FOR NO KEY UPDATE
)
UPDATE agents a
   SET credentials_used_at = statement_timestamp()
  FROM first
 WHERE a.id = first.id AND a.credentials_used_at IS NULL
"""
