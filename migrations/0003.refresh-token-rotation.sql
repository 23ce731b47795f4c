-- Refresh tokens rotate: every renewal consumes the token presented and issues its
-- successor. The tokens of one registration form a family; a family's row is locked by
-- each renewal, so racing renewals leave exactly one live token.
-- depends: 0002.dispatch-schema

CREATE TABLE refresh_token_families (
    id          uuid PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents (id),
    created_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    -- Slides forward at each renewal; a consumed token's grace ends with it.
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    revoked_reason text
);
CREATE INDEX refresh_token_families_live_by_agent ON refresh_token_families (agent_id)
    WHERE revoked_at IS NULL;

ALTER TABLE refresh_tokens
    ADD COLUMN family_id uuid REFERENCES refresh_token_families (id),
    ADD COLUMN consumed_at timestamptz,
    ADD COLUMN superseded_by uuid REFERENCES refresh_tokens (id);

-- Every existing token starts a family of its own.
INSERT INTO refresh_token_families (id, agent_id, created_at, expires_at, revoked_at)
SELECT id, agent_id, created_at, expires_at, revoked_at FROM refresh_tokens;
UPDATE refresh_tokens SET family_id = id;
ALTER TABLE refresh_tokens ALTER COLUMN family_id SET NOT NULL;
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
