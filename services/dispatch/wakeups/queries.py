"""The wake-up room's statements: what a reconnected LISTEN connection catches up on, and
the look-ahead for leases coming due."""

from services.dispatch.lifecycle.queries import DUE

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
