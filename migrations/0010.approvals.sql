-- depends: 0009.operators-and-audit
-- Approvals, the two-person rule: a request matching the fleet's approval policy is written
-- `awaiting_approval`, its commands unsigned and not claimable (the claim reads only
-- pending and sent), until enough operators other than its creator approve it; then its
-- commands are signed and start as if just created. Unapproved ones end `denied`.

-- The policy: one row for the fleet. No rules: nothing needs approval.
CREATE TABLE approval_policy (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    rules         jsonb NOT NULL DEFAULT '[]',
    approvals     integer NOT NULL DEFAULT 1 CHECK (approvals BETWEEN 1 AND 10),
    expires_in_s  integer NOT NULL DEFAULT 86400 CHECK (expires_in_s BETWEEN 60 AND 2592000),
    updated_at    timestamptz,
    updated_by_name text
);
INSERT INTO approval_policy DEFAULT VALUES;

ALTER TABLE commands DROP CONSTRAINT commands_status_check;
ALTER TABLE commands ADD CONSTRAINT commands_status_check CHECK (status IN
    ('awaiting_approval', 'pending', 'sent', 'running', 'succeeded', 'failed', 'rejected',
     'timed_out', 'expired', 'cancelled', 'denied'));
-- approvals: [{"operator": {"id", "name"}, "at", "comment"}], each operator once.
-- approvals_required: how many it needed (0: none). ttl_s: the TTL it starts with once
-- approved (while it waits, expires_at is the approval deadline). denied_reason: `denied`
-- or `approval_expired`.
ALTER TABLE commands ADD COLUMN approvals jsonb NOT NULL DEFAULT '[]',
                     ADD COLUMN approvals_required integer NOT NULL DEFAULT 0,
                     ADD COLUMN ttl_s integer,
                     ADD COLUMN denied_reason text;
-- The reaper's sweep of single commands whose approval deadline passed (a job's commands
-- go with their job).
CREATE INDEX commands_awaiting_approval ON commands (expires_at)
    WHERE status = 'awaiting_approval' AND job_id IS NULL;

ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (status IN
    ('awaiting_approval', 'running', 'completed', 'halted', 'cancelled', 'denied'));
ALTER TABLE jobs DROP CONSTRAINT finished_when_not_running;
ALTER TABLE jobs ADD CONSTRAINT finished_when_final
    CHECK ((status IN ('awaiting_approval', 'running')) = (finished_at IS NULL));
ALTER TABLE jobs ADD COLUMN approvals jsonb NOT NULL DEFAULT '[]',
                 ADD COLUMN approvals_required integer NOT NULL DEFAULT 0,
                 ADD COLUMN approval_expires_at timestamptz,
                 ADD COLUMN denied_reason text;
CREATE INDEX jobs_awaiting_approval ON jobs (approval_expires_at) WHERE status = 'awaiting_approval';
