-- depends: 0007.service-role
-- Dispatch ends the undelivered job commands of a revoked agent when auth notifies it; the
-- reaper catches what a missed notification left (agents revoked within the last day),
-- walking this small index instead of every revoked agent ever.
CREATE INDEX agents_recently_revoked ON agents (revoked_at) WHERE status = 'revoked';
