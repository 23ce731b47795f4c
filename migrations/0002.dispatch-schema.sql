-- Commands and their delivery ledger.
-- depends: 0001.auth-schema

CREATE TABLE commands (
    id              uuid PRIMARY KEY,
    agent_id        uuid NOT NULL REFERENCES agents (id),
    type            text NOT NULL,
    params          jsonb NOT NULL DEFAULT '{}'::jsonb,
    priority        smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN
                    ('pending', 'sent', 'running', 'succeeded', 'failed',
                     'timed_out', 'expired', 'cancelled')),
    retry_count     integer NOT NULL DEFAULT 0,
    max_retries     integer NOT NULL CHECK (max_retries BETWEEN 0 AND 100),
    -- Its own counter, so a delivery number can never repeat (see docs/architecture.md).
    delivery_count  integer NOT NULL DEFAULT 0,
    ack_timeout_s   integer NOT NULL,
    run_timeout_s   integer NOT NULL,
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT statement_timestamp(),
    -- The one due-time column: pending -> created_at; sent -> when the lease's ack
    -- timeout passes; running -> when the run timeout passes.
    visible_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    acked_at        timestamptz,
    finished_at     timestamptz,
    expires_at      timestamptz NOT NULL,
    result          jsonb,
    CONSTRAINT retry_count_bounded CHECK (retry_count BETWEEN 0 AND max_retries),
    CONSTRAINT delivery_matches_retries CHECK (delivery_count = 0 OR delivery_count = retry_count + 1)
);

-- The claim walks this index in delivery order: one probe for an empty poll, no sort
-- for a 50k backlog. Partial on the claimable statuses so final rows never cost a poll.
CREATE INDEX commands_claimable ON commands (agent_id, priority DESC, created_at, id)
    WHERE status IN ('pending', 'sent');

-- The reaper's indexes: leases and runs by deadline, and live commands by expiry.
CREATE INDEX commands_deadline ON commands (visible_at) WHERE status IN ('sent', 'running');
CREATE INDEX commands_expiry ON commands (expires_at) WHERE status IN ('pending', 'sent');

-- The poll's "rapid mode" probes (only when a poll claims nothing): work in flight, and
-- the newest delivery to the agent.
CREATE INDEX commands_in_flight ON commands (agent_id) WHERE status IN ('sent', 'running');
CREATE INDEX commands_recent_delivery ON commands (agent_id, sent_at DESC) WHERE sent_at IS NOT NULL;

-- Admin listing (newest first, by agent or not) and idempotent creation.
CREATE INDEX commands_by_agent ON commands (agent_id, created_at DESC, id DESC);
CREATE INDEX commands_newest ON commands (created_at DESC, id DESC);
CREATE UNIQUE INDEX commands_idempotency ON commands (agent_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Every claim rewrites an indexed column: vacuum this table far more eagerly than default.
ALTER TABLE commands SET (autovacuum_vacuum_scale_factor = 0.02,
                          autovacuum_analyze_scale_factor = 0.02,
                          fillfactor = 80);

-- One row per delivery, written by the claim statement itself, so that
-- retry_count = deliveries - 1 can be proven for every command.
CREATE TABLE deliveries (
    command_id   uuid NOT NULL REFERENCES commands (id),
    delivery     integer NOT NULL,
    delivered_at timestamptz NOT NULL,
    PRIMARY KEY (command_id, delivery)
);
