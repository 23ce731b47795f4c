-- depends: 0015.running-cancels
-- Schedules (docs/api.md): recurring jobs, started by dispatch's ticker with their
-- creator's authority. `next_run_at` is the next tick due: the ticker finds due schedules
-- through schedules_due and takes each FOR UPDATE SKIP LOCKED, so one replica ticks it at
-- a time; a paused schedule keeps its next_run_at, so its resumption sees what it missed.
CREATE TABLE schedules (
    id                 uuid PRIMARY KEY,
    name               text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    selector           jsonb NOT NULL,
    command            jsonb NOT NULL,
    rollout            jsonb NOT NULL,
    cron               text,
    timezone           text NOT NULL DEFAULT 'UTC',
    interval_s         integer CHECK (interval_s BETWEEN 1 AND 31536000),
    anchor_at          timestamptz NOT NULL,  -- an interval's ticks: anchor_at + k * interval_s
    overlap            text NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip', 'allow')),
    catch_up           text NOT NULL DEFAULT 'skip' CHECK (catch_up IN ('skip', 'latest')),
    status             text NOT NULL CHECK (status IN ('active', 'paused', 'awaiting_approval', 'denied')),
    paused_reason      text,
    next_run_at        timestamptz NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    created_by_id      uuid NOT NULL,
    created_by_name    text NOT NULL,
    approvals          jsonb NOT NULL DEFAULT '[]',
    approvals_required integer NOT NULL DEFAULT 0,
    denied_reason      text,
    CONSTRAINT one_timing CHECK ((cron IS NULL) <> (interval_s IS NULL))
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE status = 'active';

-- One row per tick that did something (or skipped it), never two for one tick: the
-- primary key is what makes a tick happen once across replicas, restarts and crashes (its
-- job is inserted in the same transaction).
CREATE TABLE schedule_runs (
    schedule_id   uuid NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    scheduled_for timestamptz NOT NULL,
    started_at    timestamptz NOT NULL,
    job_id        uuid,
    outcome       text NOT NULL
                  CHECK (outcome IN ('started', 'skipped_overlap', 'skipped_missed', 'failed_to_start')),
    detail        text,
    PRIMARY KEY (schedule_id, scheduled_for)
);
-- The retention pruner deletes runs older than the horizon, oldest first.
CREATE INDEX schedule_runs_by_time ON schedule_runs (scheduled_for);

-- A schedule's jobs run on when it is deleted: no foreign key.
ALTER TABLE jobs ADD COLUMN schedule_id uuid, ADD COLUMN scheduled_for timestamptz;
-- The overlap rule reads a schedule's newest job.
CREATE INDEX jobs_by_schedule ON jobs (schedule_id, created_at DESC) WHERE schedule_id IS NOT NULL;

-- A schedule's runs are recorded with the schedule as their actor.
ALTER TABLE audit_events DROP CONSTRAINT audit_events_actor_type_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_actor_type_check
    CHECK (actor_type IN ('operator', 'agent', 'bootstrap', 'schedule'));
