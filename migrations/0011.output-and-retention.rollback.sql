DROP INDEX operator_tokens_expiry;
DROP INDEX jobs_ended;
DROP INDEX commands_ended_alone;
ALTER TABLE commands DROP COLUMN output_truncated, DROP COLUMN output_bytes;
DROP TABLE command_output;
