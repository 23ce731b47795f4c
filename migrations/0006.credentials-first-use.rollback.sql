ALTER TABLE agents DROP COLUMN credentials_used_at;
