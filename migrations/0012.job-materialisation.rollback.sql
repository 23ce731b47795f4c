DROP INDEX jobs_materialising;
ALTER TABLE jobs DROP CONSTRAINT materialised_within_targets, DROP COLUMN materialised;
DROP TABLE job_targets;
