DROP INDEX refresh_tokens_by_family;
ALTER TABLE refresh_tokens
    DROP COLUMN superseded_by,
    DROP COLUMN consumed_at,
    DROP COLUMN family_id;
DROP TABLE refresh_token_families;
