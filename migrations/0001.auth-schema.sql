-- Identity: registration tokens, agents and their refresh tokens.
-- Secrets are stored only as SHA-256 digests (bytea); a dump holds nothing usable.

CREATE TABLE registration_tokens (
    id          uuid PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    max_uses    integer NOT NULL CHECK (max_uses BETWEEN 1 AND 100000),
    -- The CHECK is the last line of defence against over-use under concurrency.
    uses        integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    note        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

CREATE TABLE agents (
    id                    uuid PRIMARY KEY,
    machine_id            text NOT NULL,
    registration_token_id uuid NOT NULL REFERENCES registration_tokens (id),
    hostname              text NOT NULL,
    os                    text NOT NULL DEFAULT '',
    arch                  text NOT NULL DEFAULT '',
    agent_version         text NOT NULL DEFAULT '',
    labels                jsonb NOT NULL DEFAULT '{}'::jsonb,
    status                text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at            timestamptz NOT NULL DEFAULT statement_timestamp(),
    last_seen_at          timestamptz,
    revoked_at            timestamptz
);

-- At most one active agent per machine: two registrations racing for one machine with
-- different tokens cannot both win (the loser gets 409).
CREATE UNIQUE INDEX agents_one_active_per_machine ON agents (machine_id) WHERE status = 'active';
CREATE INDEX agents_created_at ON agents (created_at DESC, id DESC);

CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents (id),
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    expires_at  timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at  timestamptz
);

CREATE INDEX refresh_tokens_live_by_agent ON refresh_tokens (agent_id) WHERE revoked_at IS NULL;
