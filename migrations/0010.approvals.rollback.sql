-- Requests still awaiting approval or denied have no place in the older schema: they end
-- cancelled (nothing of them was ever signed or delivered).
UPDATE commands SET status = 'cancelled', finished_at = coalesce(finished_at, statement_timestamp())
 WHERE status IN ('awaiting_approval', 'denied');
UPDATE jobs SET status = 'cancelled', finished_at = coalesce(finished_at, statement_timestamp())
 WHERE status IN ('awaiting_approval', 'denied');
DROP INDEX jobs_awaiting_approval;
ALTER TABLE jobs DROP COLUMN denied_reason, DROP COLUMN approval_expires_at, DROP COLUMN approvals_required,
                 DROP COLUMN approvals;
ALTER TABLE jobs DROP CONSTRAINT finished_when_final;
ALTER TABLE jobs ADD CONSTRAINT finished_when_not_running CHECK ((status = 'running') = (finished_at IS NULL));
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (status IN ('running', 'completed', 'halted', 'cancelled'));
DROP INDEX commands_awaiting_approval;
ALTER TABLE commands DROP COLUMN denied_reason, DROP COLUMN ttl_s, DROP COLUMN approvals_required,
                     DROP COLUMN approvals;
ALTER TABLE commands DROP CONSTRAINT commands_status_check;
ALTER TABLE commands ADD CONSTRAINT commands_status_check CHECK (status IN
    ('pending', 'sent', 'running', 'succeeded', 'failed', 'rejected',
     'timed_out', 'expired', 'cancelled'));
DROP TABLE approval_policy;
