ALTER TABLE agents DROP COLUMN facts, DROP COLUMN facts_updated_at, DROP COLUMN facts_requested_at;
