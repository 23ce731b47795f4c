-- Job commands stay as plain commands; those still waiting for the rollout window would
-- never become due without the releaser, so they end cancelled.
UPDATE commands SET status = 'cancelled', finished_at = statement_timestamp()
 WHERE job_id IS NOT NULL AND status = 'pending' AND visible_at = 'infinity';
DROP INDEX agents_labels;
ALTER TABLE commands DROP COLUMN skipped;
ALTER TABLE commands DROP COLUMN job_id;
DROP TABLE jobs;
