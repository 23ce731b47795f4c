"""Retention's statements.

The pruner (pruner.py) runs these on its own connection, under a session advisory lock (one
replica at a time), each batch its own short transaction, oldest first through an index, at
most $2 rows. Rows are picked FOR UPDATE SKIP LOCKED: a row something else is touching is
left for the next pass, and nothing a poll or a claim does ever waits on the pruner (the
claim reads only pending and sent commands, which have no finished_at)."""

PRUNE_LOCK = "SELECT pg_try_advisory_lock(hashtext('fleetline_pruner'))"

# The commands a pruning statement picked (`doomed`, ids), deleted with their delivery
# ledger and output in the same statement: the foreign keys are checked at its end.
DELETE_DOOMED_COMMANDS = """, ledger AS (
    DELETE FROM deliveries WHERE command_id IN (SELECT id FROM doomed)
), output AS (
    DELETE FROM command_output WHERE command_id IN (SELECT id FROM doomed)
), gone AS (
    DELETE FROM commands WHERE id IN (SELECT id FROM doomed) RETURNING 1
)"""

# Single commands that ended before the horizon, with their delivery ledger and output.
# $3: where the previous batch ended (finished_at). Deleted rows stay in the index until
# vacuum, so a scan from the oldest would walk every entry earlier batches deleted: each
# batch slower than the last (measured: 1,552 rows/s over a 1,000,000-row backlog). A row
# skipped as locked is left behind the bound, for the next pass.
PRUNE_COMMANDS = f"""
WITH doomed AS MATERIALIZED (
    SELECT id, finished_at FROM commands
     WHERE job_id IS NULL AND finished_at IS NOT NULL AND finished_at >= $3 AND finished_at < $1
     ORDER BY finished_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
){DELETE_DOOMED_COMMANDS}
SELECT (SELECT count(*) FROM gone) AS deleted, (SELECT max(finished_at) FROM doomed) AS reached
"""

# The commands of jobs that ended before the horizon, oldest job first; a command still
# live (a job cancelled under a running command) stays until it ends.
PRUNE_JOB_COMMANDS = f"""
WITH doomed AS MATERIALIZED (
    SELECT c.id FROM jobs j JOIN commands c ON c.job_id = j.id
     WHERE j.finished_at IS NOT NULL AND j.finished_at < $1 AND c.finished_at IS NOT NULL
     ORDER BY j.finished_at
     LIMIT $2
       FOR UPDATE OF c SKIP LOCKED
){DELETE_DOOMED_COMMANDS}
SELECT count(*) FROM gone
"""

# Jobs pruned whole: a job goes once none of its commands is left.
PRUNE_JOBS = """
WITH doomed AS MATERIALIZED (
    SELECT j.id FROM jobs j
     WHERE j.finished_at IS NOT NULL AND j.finished_at < $1
       AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.job_id = j.id)
     ORDER BY j.finished_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), targets AS (
    DELETE FROM job_targets WHERE job_id IN (SELECT id FROM doomed)
), gone AS (
    DELETE FROM jobs WHERE id IN (SELECT id FROM doomed) RETURNING 1
)
SELECT count(*) FROM gone
"""

# A schedule's runs before the horizon (their jobs go by the rule above).
PRUNE_SCHEDULE_RUNS = """
WITH doomed AS MATERIALIZED (
    SELECT schedule_id, scheduled_for FROM schedule_runs
     WHERE scheduled_for < $1
     ORDER BY scheduled_for
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM schedule_runs r USING doomed d
     WHERE r.schedule_id = d.schedule_id AND r.scheduled_for = d.scheduled_for
    RETURNING 1
)
SELECT count(*) FROM gone
"""

# Webhook deliveries that ended (delivered or failed) before the horizon, oldest first
# through their own partial index; pending ones are never pruned (they are still owed).
PRUNE_WEBHOOK_DELIVERIES = """
WITH doomed AS MATERIALIZED (
    SELECT id FROM webhook_deliveries
     WHERE status <> 'pending' AND created_at < $1
     ORDER BY created_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM webhook_deliveries w USING doomed d WHERE w.id = d.id RETURNING 1
)
SELECT count(*) FROM gone
"""

# Audit events are append-only: the services' role may not delete them at all. The pruner
# calls the owner's function (migration 0013), which computes the horizon itself from the
# retention only `fleetline migrate` writes. $2: where the previous batch ended.
PRUNE_AUDIT = "SELECT deleted, reached FROM prune_audit_events($1, $2)"

# The horizon the function prunes to (for the pruner's log line).
AUDIT_HORIZON = "SELECT statement_timestamp() - make_interval(secs => days * 86400) FROM audit_retention"

# The oldest row each pruned table keeps, for the metrics (each one index probe).
OLDEST_KEPT = """
SELECT (SELECT min(finished_at) FROM commands WHERE job_id IS NULL AND finished_at IS NOT NULL) AS commands,
       (SELECT min(finished_at) FROM jobs WHERE finished_at IS NOT NULL) AS jobs,
       (SELECT min(at) FROM audit_events) AS audit_events
"""
