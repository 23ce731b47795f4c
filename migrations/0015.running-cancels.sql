-- depends: 0014.oidc-nonces
-- Cancelling a running command reaches its agent (docs/api.md, cancelling a running
-- command). The command stays `running` until its agent reports (`cancelled`) or its run
-- timeout passes; meanwhile each poll of that agent hands over the signed cancel, made when
-- the operator asked, whenever cancel_visible_at has passed. Like a lease: handed over, it
-- is due again 30 s later, until the agent reports, so a lost answer never loses a cancel.
ALTER TABLE commands
    ADD COLUMN cancel_requested_at timestamptz,
    ADD COLUMN cancel_visible_at timestamptz,
    ADD COLUMN cancel_signed jsonb;
-- The poll's claim probes this for its agent: only running commands with a cancel waiting
-- are in it, so an agent with none costs one probe of an (almost always) empty index.
CREATE INDEX commands_cancelling ON commands (agent_id, cancel_visible_at)
    WHERE status = 'running' AND cancel_visible_at IS NOT NULL;
