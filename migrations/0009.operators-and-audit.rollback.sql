ALTER TABLE jobs DROP COLUMN target_labels, DROP COLUMN cancelled_by_name, DROP COLUMN cancelled_by_id,
                 DROP COLUMN created_by_name, DROP COLUMN created_by_id;
ALTER TABLE commands DROP COLUMN cancelled_by_name, DROP COLUMN cancelled_by_id,
                     DROP COLUMN created_by_name, DROP COLUMN created_by_id;
DROP TABLE audit_events;
DROP FUNCTION audit_events_no_truncate();
DROP FUNCTION audit_events_append_only();
DROP TABLE operator_sessions;
DROP TABLE operator_tokens;
DROP TABLE operators;
