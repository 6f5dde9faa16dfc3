DROP TABLE audit_checkpoints;
DROP TABLE audit_chain;
DROP TABLE audit_events;
DROP FUNCTION audit_append_only();
