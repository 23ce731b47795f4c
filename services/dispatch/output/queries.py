"""A command's live output: its chunks, and the stream's end on the command row."""

from services.dispatch.wakeups.channels import OUTPUT_CHANNEL

# The command a chunk belongs to, locked (NO KEY UPDATE, the claim's strength): chunks of
# one command are placed one at a time, so two copies of a chunk racing cannot both see the
# old end, and a result arriving meanwhile waits for the chunk or the chunk sees it ended.
# With its agent's status, as ack and result read it (unlocked: a revocation committed
# before this statement is seen): a revoked agent's token writes nothing.
LOCK_FOR_OUTPUT = """
WITH agent AS MATERIALIZED (
    SELECT status FROM agents WHERE id = $2
), command AS MATERIALIZED (
    SELECT status, output_bytes, output_truncated FROM commands
     WHERE id = $1 AND agent_id = $2
       FOR NO KEY UPDATE
)
SELECT agent.status AS agent_status, command.*
  FROM agent LEFT JOIN command ON true
"""

# The stored chunks that reach into [$2, $3). A chunk holds at most 64 KiB, so none that
# starts 64 KiB or more before $2 can: the primary key's range stays short however long
# the stream is.
OUTPUT_CHUNKS = """
SELECT byte_offset, data FROM command_output
 WHERE command_id = $1 AND byte_offset > $2 - 65536 AND byte_offset < $3
 ORDER BY byte_offset
"""

# The chunk, the stream's new end and the followers' wake-up, in one statement (run under
# LOCK_FOR_OUTPUT's lock, which is what makes $2 the end).
APPEND_OUTPUT = f"""
WITH stored AS (
    INSERT INTO command_output (command_id, byte_offset, data) VALUES ($1, $2, $3)
), grown AS (
    UPDATE commands SET output_bytes = $2 + octet_length($3), output_truncated = $4 WHERE id = $1
)
SELECT pg_notify('{OUTPUT_CHANNEL}', $1::text)
"""

# The cap reached exactly: nothing more to store, only the mark.
MARK_OUTPUT_TRUNCATED = "UPDATE commands SET output_truncated = true WHERE id = $1"
