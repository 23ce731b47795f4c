-- depends: 0004.signed-commands
-- Jobs: one operator request, many agents. A job is one row plus one ordinary command per
-- target, written in the job's transaction; everything about its progress (counts, the
-- rollout window, halting, completion) is read from those commands, never counted apart.

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'completed', 'halted', 'cancelled')),
    selector        jsonb NOT NULL,
    command         jsonb NOT NULL,
    rollout         jsonb NOT NULL,
    -- The rollout as numbers: a percentage window is resolved against target_count once,
    -- when the job is created (targets never change afterwards).
    max_in_flight   integer CHECK (max_in_flight BETWEEN 1 AND 10000),
    max_failures    integer CHECK (max_failures BETWEEN 0 AND 10000),
    target_count    integer NOT NULL CHECK (target_count > 0),
    idempotency_key text UNIQUE,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    halted_reason   text,
    CONSTRAINT finished_when_not_running CHECK ((status = 'running') = (finished_at IS NULL))
);

CREATE INDEX jobs_newest ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_by_status ON jobs (status, created_at DESC, id DESC);

-- A job's commands. `skipped`: cancelled because the job halted (shown as `skipped`).
-- A command beyond the rollout window waits with visible_at = 'infinity' (never due, so
-- the claim statement needs no change); the releaser makes it due.
ALTER TABLE commands ADD COLUMN job_id uuid REFERENCES jobs (id);
ALTER TABLE commands ADD COLUMN skipped boolean NOT NULL DEFAULT false;

-- Exactly one command per target, and the targets page walks it.
CREATE UNIQUE INDEX commands_job_target ON commands (job_id, agent_id) WHERE job_id IS NOT NULL;
-- The counts: GROUP BY over an index-only scan of one job's entries.
CREATE INDEX commands_job_status ON commands (job_id, status) INCLUDE (visible_at, skipped)
    WHERE job_id IS NOT NULL;
-- The releaser's next waiting commands, in order.
CREATE INDEX commands_job_waiting ON commands (job_id, id)
    WHERE status = 'pending' AND visible_at = 'infinity';

-- Label selectors (`labels @> {"env": "prod"}`) on a fleet of 100,000 agents.
CREATE INDEX agents_labels ON agents USING gin (labels jsonb_path_ops) WHERE status = 'active';
