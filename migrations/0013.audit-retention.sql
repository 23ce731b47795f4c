-- depends: 0012.job-materialisation
-- Audit events are append-only for the services: their role may insert and read them, never
-- update or delete them (the trigger of 0009 trusted a setting any session can change).
-- Pruning past the retention horizon is a function owned by the schema's owner (SECURITY
-- DEFINER) that computes the horizon itself from audit_retention, which only the owner
-- writes (`fleetline migrate`, from FLEETLINE_AUDIT_RETENTION_DAYS): nothing a service's
-- session says can move it.
CREATE TABLE audit_retention (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    days      double precision NOT NULL CHECK (days > 0)
);
INSERT INTO audit_retention (days) VALUES (365);
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_retention FROM fleetline_service;
REVOKE DELETE ON audit_events FROM fleetline_service;

-- One batch of at most `batch` events older than the horizon, from `after` on (where the
-- previous batch ended, so each batch starts there instead of walking what went before):
-- how many went, and the newest of them.
CREATE FUNCTION prune_audit_events(batch integer, after timestamptz)
RETURNS TABLE (deleted bigint, reached timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    horizon timestamptz := statement_timestamp()
        - make_interval(secs => (SELECT r.days * 86400 FROM audit_retention r));
BEGIN
    -- The append-only trigger lets this transaction remove events older than the horizon,
    -- and only those; the allowance ends with the batch.
    PERFORM set_config('fleetline.audit_prune_before', horizon::text, true);
    RETURN QUERY
    WITH doomed AS MATERIALIZED (
        SELECT e.id, e.at FROM audit_events e
         WHERE e.at >= after AND e.at < horizon
         ORDER BY e.at
         LIMIT batch
    ), gone AS (
        DELETE FROM audit_events e WHERE e.id IN (SELECT d.id FROM doomed d) RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone), (SELECT max(d.at) FROM doomed d);
    PERFORM set_config('fleetline.audit_prune_before', '', true);
END
$$;
REVOKE EXECUTE ON FUNCTION prune_audit_events(integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prune_audit_events(integer, timestamptz) TO fleetline_service;
