UPDATE commands SET status = 'failed' WHERE status = 'rejected';
ALTER TABLE commands DROP CONSTRAINT commands_status_check;
ALTER TABLE commands ADD CONSTRAINT commands_status_check CHECK (status IN
    ('pending', 'sent', 'running', 'succeeded', 'failed', 'timed_out', 'expired', 'cancelled'));
ALTER TABLE commands DROP COLUMN signed;
DROP TABLE command_keysets;
