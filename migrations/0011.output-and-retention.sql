-- depends: 0010.approvals
-- Live output, and a history that stays at its retention horizon.

-- A running command's output as the agent streams it: one row per chunk, keyed by where
-- the chunk starts in the stream (bytes of UTF-8), so a chunk sent twice lands once.
CREATE TABLE command_output (
    command_id  uuid NOT NULL REFERENCES commands (id),
    byte_offset bigint NOT NULL CHECK (byte_offset >= 0),
    data        text NOT NULL,
    PRIMARY KEY (command_id, byte_offset)
);
-- The stream's length so far, and whether it reached the cap (FLEETLINE_MAX_OUTPUT_BYTES):
-- kept on the command so a chunk's check is one row, locked with the command.
ALTER TABLE commands ADD COLUMN output_bytes bigint NOT NULL DEFAULT 0,
                     ADD COLUMN output_truncated boolean NOT NULL DEFAULT false;

-- The pruner's ways in, oldest first, without a scan: single commands by when they ended
-- (a job's commands go with their job), jobs by when they ended, operator tokens by expiry.
-- Audit events are walked through audit_events_newest backwards; sessions through
-- operator_sessions_expiry.
CREATE INDEX commands_ended_alone ON commands (finished_at) WHERE job_id IS NULL AND finished_at IS NOT NULL;
CREATE INDEX jobs_ended ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX operator_tokens_expiry ON operator_tokens (expires_at);
