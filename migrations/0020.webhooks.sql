-- depends: 0019.agent-releases
-- Webhooks (docs/api.md, events out): endpoints, and their deliveries as a transactional
-- outbox. An event becomes one delivery per enabled endpoint that subscribes to it, in the
-- transaction of the change that causes it: a change that rolls back sends nothing, a
-- committed one is delivered at least once (dispatch's sender, webhooks/sender.py).
--
-- Each event is emitted by a trigger on the table whose change it is, so no path that
-- makes the change can forget it and each is written once: a job ending (jobs), a command
-- failing (commands), an agent enrolled or revoked (agents), a request caught by the
-- approval policy (jobs, commands), a schedule's run that failed to start (schedule_runs),
-- every audit event (audit_events). Online and offline come from dispatch's presence
-- sweep, which calls webhook_emit() in its one statement.

CREATE TABLE webhook_endpoints (
    id                    uuid PRIMARY KEY,
    url                   text NOT NULL,
    events                text[] NOT NULL,
    description           text NOT NULL DEFAULT '',
    enabled               boolean NOT NULL DEFAULT true,
    disabled_reason       text,
    -- The signing secret (the sender needs it whole); the previous one signs too until
    -- previous_secret_until, so a receiver can switch without losing an event.
    secret                text NOT NULL,
    previous_secret       text,
    previous_secret_until timestamptz,
    created_at            timestamptz NOT NULL DEFAULT statement_timestamp(),
    created_by            text NOT NULL,
    updated_at            timestamptz NOT NULL DEFAULT statement_timestamp()
);

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,  -- the webhook-id header: the same on every retry
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type      text NOT NULL,
    body            jsonb NOT NULL,    -- {"type", "timestamp", "data"}
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    -- When it is due; while an attempt is under way, when that attempt's lease ends (a
    -- sender that died mid-attempt leaves it to be sent again, with the same id).
    next_attempt_at timestamptz NOT NULL DEFAULT statement_timestamp(),
    created_at      timestamptz NOT NULL DEFAULT statement_timestamp(),
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    status_code     integer,
    latency_ms      integer,
    error           text
);
-- The sender's claim: due pending deliveries, oldest due first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- An endpoint's deliveries, newest first (the listing and its cursor).
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
-- Retention prunes finished deliveries by age.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (created_at) WHERE status <> 'pending';

-- Whether an enabled endpoint subscribes to the event type (its name, or a prefix pattern
-- like "audit.*"): the triggers ask first, so an event nobody wants builds nothing (a
-- large job's counts, an agent's row) and costs one look at a table of a few rows.
CREATE FUNCTION webhook_wanted(event_type text) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM webhook_endpoints e, unnest(e.events) AS p
                    WHERE e.enabled
                      AND (p = event_type OR (right(p, 2) = '.*' AND starts_with(event_type, left(p, -1)))))
$$;

-- An event: one delivery per enabled endpoint whose events name it, exactly or by a
-- prefix pattern ("audit.*"). The number of deliveries made. When it made some, the
-- senders hear it on commit (fleetline_webhooks; PostgreSQL sends one notification per
-- transaction for the same payload), so a delivery waits for no polling interval.
CREATE FUNCTION webhook_emit(event_type text, data jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    made integer;
BEGIN
    INSERT INTO webhook_deliveries (id, endpoint_id, event_type, body)
    SELECT gen_random_uuid(), e.id, event_type,
           jsonb_build_object('type', event_type,
                              'timestamp', to_char(statement_timestamp() AT TIME ZONE 'UTC',
                                                   'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                              'data', data)
      FROM webhook_endpoints e
     WHERE e.enabled
       AND EXISTS (SELECT 1 FROM unnest(e.events) AS p
                    WHERE p = event_type OR (right(p, 2) = '.*' AND starts_with(event_type, left(p, -1))));
    GET DIAGNOSTICS made = ROW_COUNT;
    IF made > 0 THEN
        PERFORM pg_notify('fleetline_webhooks', '');
    END IF;
    RETURN made;
END $$;

CREATE FUNCTION webhook_agent(a agents) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', a.id, 'hostname', a.hostname, 'machine_id', a.machine_id, 'labels', a.labels,
                              'os', a.os, 'arch', a.arch, 'agent_version', a.agent_version, 'status', a.status,
                              'last_seen_at', a.last_seen_at, 'created_at', a.created_at)
$$;

-- job.finished: completed, halted or cancelled, once (the status guard of END_JOB makes
-- the change happen once); the counts by command status at that moment.
CREATE FUNCTION webhook_job_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT webhook_wanted('job.finished') THEN
        RETURN NULL;
    END IF;
    PERFORM webhook_emit('job.finished', jsonb_build_object(
        'id', NEW.id, 'status', NEW.status, 'selector', NEW.selector, 'command', NEW.command,
        'rollout', NEW.rollout, 'target_count', NEW.target_count, 'created_at', NEW.created_at,
        'finished_at', NEW.finished_at, 'halted_reason', NEW.halted_reason,
        'created_by', jsonb_build_object('id', NEW.created_by_id, 'name', NEW.created_by_name),
        'schedule_id', NEW.schedule_id,
        'command_counts', (SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}')
                             FROM (SELECT status, count(*) AS n FROM commands
                                    WHERE job_id = NEW.id GROUP BY status) AS s)));
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_job_finished AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'halted', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION webhook_job_finished();

-- command.failed: failed, timed_out, expired or rejected, with its agent's hostname and labels.
CREATE FUNCTION webhook_command_failed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT webhook_wanted('command.failed') THEN
        RETURN NULL;
    END IF;
    PERFORM webhook_emit('command.failed', jsonb_build_object(
        'id', NEW.id, 'type', NEW.type, 'status', NEW.status, 'job_id', NEW.job_id,
        'created_at', NEW.created_at, 'finished_at', NEW.finished_at, 'result', NEW.result,
        'created_by', jsonb_build_object('id', NEW.created_by_id, 'name', NEW.created_by_name),
        'agent', (SELECT webhook_agent(a) FROM agents a WHERE a.id = NEW.agent_id)));
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_command_failed AFTER UPDATE OF status ON commands FOR EACH ROW
    WHEN (NEW.status IN ('failed', 'timed_out', 'expired', 'rejected') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION webhook_command_failed();

-- approval.requested: a job or a single command the approval policy caught.
CREATE FUNCTION webhook_approval_requested() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT webhook_wanted('approval.requested') THEN
        RETURN NULL;
    END IF;
    PERFORM webhook_emit('approval.requested', jsonb_build_object(
        'kind', TG_ARGV[0], 'id', NEW.id, 'approvals_required', NEW.approvals_required,
        'created_by', jsonb_build_object('id', NEW.created_by_id, 'name', NEW.created_by_name),
        'created_at', NEW.created_at));
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_job_approval_requested AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.status = 'awaiting_approval') EXECUTE FUNCTION webhook_approval_requested('job');
CREATE TRIGGER webhook_command_approval_requested AFTER INSERT ON commands FOR EACH ROW
    WHEN (NEW.status = 'awaiting_approval' AND NEW.job_id IS NULL)
    EXECUTE FUNCTION webhook_approval_requested('command');

-- agent.enrolled and agent.revoked.
CREATE FUNCTION webhook_agent_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT webhook_wanted(TG_ARGV[0]) THEN
        RETURN NULL;
    END IF;
    PERFORM webhook_emit(TG_ARGV[0], webhook_agent(NEW));
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_agent_enrolled AFTER INSERT ON agents FOR EACH ROW
    EXECUTE FUNCTION webhook_agent_changed('agent.enrolled');
CREATE TRIGGER webhook_agent_revoked AFTER UPDATE OF status ON agents FOR EACH ROW
    WHEN (NEW.status = 'revoked' AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION webhook_agent_changed('agent.revoked');

-- schedule.run_failed: a tick whose job could not be started.
CREATE FUNCTION webhook_schedule_run_failed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT webhook_wanted('schedule.run_failed') THEN
        RETURN NULL;
    END IF;
    PERFORM webhook_emit('schedule.run_failed', jsonb_build_object(
        'schedule_id', NEW.schedule_id,
        'name', (SELECT name FROM schedules WHERE id = NEW.schedule_id),
        'scheduled_for', NEW.scheduled_for, 'detail', NEW.detail));
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_schedule_run_failed AFTER INSERT ON schedule_runs FOR EACH ROW
    WHEN (NEW.outcome = 'failed_to_start') EXECUTE FUNCTION webhook_schedule_run_failed();

-- audit.<action>: every audit event, as the audit listing shows it.
CREATE FUNCTION webhook_audit_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT webhook_wanted('audit.' || NEW.action) THEN
        RETURN NULL;
    END IF;
    PERFORM webhook_emit('audit.' || NEW.action, jsonb_build_object(
        'id', NEW.id, 'at', NEW.at,
        'actor', jsonb_build_object('type', NEW.actor_type, 'id', NEW.actor_id, 'name', NEW.actor_name),
        'action', NEW.action, 'target', jsonb_build_object('type', NEW.target_type, 'id', NEW.target_id),
        'outcome', NEW.outcome, 'request_id', NEW.request_id, 'source_ip', NEW.source_ip,
        'details', NEW.details));
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_audit_event AFTER INSERT ON audit_events FOR EACH ROW
    EXECUTE FUNCTION webhook_audit_event();

-- Presence (agent.offline and agent.online): what dispatch's sweep last saw of each
-- agent; NULL until its first sweep, which emits nothing (it only learns the state).
ALTER TABLE agents ADD COLUMN presence text CHECK (presence IN ('online', 'offline'));
