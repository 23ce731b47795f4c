DROP INDEX commands_cancelling;
ALTER TABLE commands
    DROP COLUMN cancel_requested_at,
    DROP COLUMN cancel_visible_at,
    DROP COLUMN cancel_signed;
