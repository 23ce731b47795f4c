DELETE FROM audit_events WHERE actor_type = 'schedule';
ALTER TABLE audit_events DROP CONSTRAINT audit_events_actor_type_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_actor_type_check
    CHECK (actor_type IN ('operator', 'agent', 'bootstrap'));
DROP INDEX jobs_by_schedule;
ALTER TABLE jobs DROP COLUMN schedule_id, DROP COLUMN scheduled_for;
DROP TABLE schedule_runs;
DROP TABLE schedules;
