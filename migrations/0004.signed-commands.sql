-- Signed commands: each command carries the signature made when it was queued, and the
-- keysets (documents signed offline by the root key) that tell agents which signing keys
-- to trust. The signing keys themselves never live here: a keyset is public, and one
-- written by anyone but the root key's holder does not verify on any agent.
-- And a command an agent refuses to run ends `rejected`.
-- depends: 0003.refresh-token-rotation

CREATE TABLE command_keysets (
    version     integer PRIMARY KEY CHECK (version > 0),
    document    jsonb NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT statement_timestamp()
);

ALTER TABLE commands ADD COLUMN signed jsonb;

ALTER TABLE commands DROP CONSTRAINT commands_status_check;
ALTER TABLE commands ADD CONSTRAINT commands_status_check CHECK (status IN
    ('pending', 'sent', 'running', 'succeeded', 'failed', 'rejected',
     'timed_out', 'expired', 'cancelled'));
