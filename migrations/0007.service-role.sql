-- depends: 0006.credentials-first-use
-- The services connect as a role that may read and write the rows of Fleetline's tables and
-- nothing else: no DDL, no other database's objects, no superuser. Migrations run as the
-- owner of the schema. `fleetline_service` is the group role (roles are cluster-wide: made
-- once); `fleetline migrate` makes the login role in it (FLEETLINE_SERVICE_DATABASE_PASSWORD).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleetline_service') THEN
        CREATE ROLE fleetline_service NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO fleetline_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO fleetline_service;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO fleetline_service;
-- Which migrations are applied is read (readiness), never written, by the services.
REVOKE INSERT, UPDATE, DELETE ON _yoyo_migration, _yoyo_log, _yoyo_version, yoyo_lock
    FROM fleetline_service;
-- Tables later migrations create (as the same owner) come with the same rights.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO fleetline_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO fleetline_service;
