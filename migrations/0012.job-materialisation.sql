-- depends: 0011.output-and-retention
-- Large jobs answer at once: their targets are frozen here, and dispatch's materialiser
-- turns them into signed commands a slice at a time, in the background. `materialised`
-- counts the targets turned into commands so far (all of them, for a job made whole).
CREATE TABLE job_targets (
    job_id   uuid NOT NULL REFERENCES jobs (id),
    seq      integer NOT NULL,
    agent_id uuid NOT NULL,
    PRIMARY KEY (job_id, seq)
);
ALTER TABLE jobs ADD COLUMN materialised integer;
UPDATE jobs SET materialised = target_count;
ALTER TABLE jobs ALTER COLUMN materialised SET NOT NULL,
                 ALTER COLUMN materialised SET DEFAULT 0,
                 ADD CONSTRAINT materialised_within_targets CHECK (materialised BETWEEN 0 AND target_count);
-- The materialiser's way in: running jobs with targets left, oldest first.
CREATE INDEX jobs_materialising ON jobs (created_at) WHERE status = 'running' AND materialised < target_count;
