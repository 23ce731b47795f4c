-- depends: 0008.revoked-agents
-- Named operators with roles and scopes, their tokens and console sessions (auth's), and
-- the audit trail every service writes in the transaction of the change it records.

CREATE TABLE operators (
    id            uuid PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9_.-]{1,64}$'),
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    -- labels: every pair an agent must carry to be reached ({}: all agents); command_types:
    -- the types it may queue (["*"]: all). Admins have no scope.
    scope         jsonb NOT NULL DEFAULT '{"labels": {}, "command_types": ["*"]}',
    email         text UNIQUE CHECK (email = lower(email)),
    password_hash text,  -- Argon2id, for console sign-in
    created_at    timestamptz NOT NULL DEFAULT statement_timestamp(),
    disabled_at   timestamptz
);
-- The built-in operator the bootstrap token (FLEETLINE_ADMIN_TOKEN) acts as: an admin with
-- no password and no token of its own, so every use of that token has a name in the trail.
INSERT INTO operators (id, name, role) VALUES ('00000000-0000-0000-0000-000000000000', 'bootstrap', 'admin');

-- Stored as SHA-256 digests only; last_used_at is written in batches.
CREATE TABLE operator_tokens (
    id           uuid PRIMARY KEY,
    operator_id  uuid NOT NULL REFERENCES operators (id),
    token_hash   bytea NOT NULL UNIQUE,
    note         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT statement_timestamp(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX operator_tokens_by_operator ON operator_tokens (operator_id, created_at DESC);

-- Console sessions: only a hash of the session id (the cookie's value) is stored. A session
-- opened with a token lives no longer than that token; one opened with the bootstrap token
-- keeps that token's digest, so setting a new bootstrap token ends it.
CREATE TABLE operator_sessions (
    id_hash     bytea PRIMARY KEY,
    operator_id uuid NOT NULL REFERENCES operators (id),
    token_id    uuid REFERENCES operator_tokens (id),
    bootstrap_hash bytea,
    method      text NOT NULL CHECK (method IN ('password', 'token', 'oidc')),
    created_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX operator_sessions_by_operator ON operator_sessions (operator_id);
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);

-- The audit trail: one row per change (written in the change's transaction), per refusal
-- (403) and per sign-in, and per agent security event. Append-only (below).
CREATE TABLE audit_events (
    id          uuid PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT statement_timestamp(),
    actor_type  text NOT NULL CHECK (actor_type IN ('operator', 'agent', 'bootstrap')),
    actor_id    uuid,
    actor_name  text NOT NULL,
    action      text NOT NULL,
    target_type text,
    target_id   text,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'forbidden', 'failed')),
    request_id  text,
    source_ip   text,
    details     jsonb NOT NULL DEFAULT '{}'
);
-- The listing's filters, each walked newest first.
CREATE INDEX audit_events_newest ON audit_events (at DESC, id DESC);
CREATE INDEX audit_events_by_actor ON audit_events (actor_id, at DESC, id DESC);
CREATE INDEX audit_events_by_actor_name ON audit_events (actor_name, at DESC, id DESC);
CREATE INDEX audit_events_by_action ON audit_events (action, at DESC, id DESC);
CREATE INDEX audit_events_by_target ON audit_events (target_id, at DESC, id DESC);

-- The database refuses to change or remove an event. Only the retention pruner removes
-- old ones: it says so in its transaction (fleetline.audit_prune_before, a time), and only
-- events older than that time go.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    horizon text := current_setting('fleetline.audit_prune_before', true);
BEGIN
    IF TG_OP = 'DELETE' AND horizon IS NOT NULL AND horizon <> '' AND OLD.at < horizon::timestamptz THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE FUNCTION audit_events_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (TRUNCATE refused)' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_no_truncate();
-- And the services' role may not even try to rewrite one.
REVOKE UPDATE ON audit_events FROM fleetline_service;

-- Who asked, on the command and the job themselves (their history reads without the trail).
ALTER TABLE commands ADD COLUMN created_by_id uuid, ADD COLUMN created_by_name text,
                     ADD COLUMN cancelled_by_id uuid, ADD COLUMN cancelled_by_name text;
ALTER TABLE jobs ADD COLUMN created_by_id uuid, ADD COLUMN created_by_name text,
                 ADD COLUMN cancelled_by_id uuid, ADD COLUMN cancelled_by_name text,
                 -- The labels every target is known to carry (the selector's and the
                 -- creator's scope's): a scoped operator sees the job when they cover its scope.
                 ADD COLUMN target_labels jsonb NOT NULL DEFAULT '{}';
