ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM fleetline_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM fleetline_service;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM fleetline_service;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM fleetline_service;
REVOKE USAGE ON SCHEMA public FROM fleetline_service;
-- The role itself stays: other databases of the cluster may still grant to it.
