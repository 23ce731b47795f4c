DROP INDEX agents_recently_revoked;
