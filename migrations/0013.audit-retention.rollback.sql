DROP FUNCTION prune_audit_events(integer, timestamptz);
GRANT DELETE ON audit_events TO fleetline_service;
DROP TABLE audit_retention;
