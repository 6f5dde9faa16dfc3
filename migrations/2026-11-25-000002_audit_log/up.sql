-- The audit log: append-only at the database level, sealed into a hash chain.
--
-- Writers insert rows into audit_events in the same transaction as whatever they
-- record; nothing ever updates them. One sealer at a time (src/audit/sealer.rs) chains
-- them by inserting into audit_chain, in the order of the transactions that wrote
-- them, and only once no older transaction can still commit: an event with
-- xid < pg_snapshot_xmin(pg_current_snapshot()) can never be joined by an earlier one.
-- Keeping the chain in its own table keeps both tables insert-only, so writing an
-- event costs one insert and no trigger.

CREATE TABLE audit_events (
    id             bigserial   PRIMARY KEY,
    -- The writing (top-level) transaction, for sealing in commit-safe order.
    xid            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_kind     text        NOT NULL CHECK (actor_kind IN ('user', 'system', 'anonymous')),
    actor_id       uuid,
    actor_role     text,
    action         text        NOT NULL,
    resource_type  text        NOT NULL,
    resource_id    uuid,
    patient_id     uuid,
    outcome        text        NOT NULL CHECK (outcome IN ('success', 'failure')),
    failure_reason text,
    purpose        text        NOT NULL,
    request_id     text,
    client_ip      text,
    user_agent     text,
    -- Only ids, codes and counts: {"key": {"id": "…"} | {"code": "…"} | {"count": n}}.
    details        jsonb       NOT NULL DEFAULT '{}'
);

-- The sealer's order and watermark.
CREATE INDEX audit_events_by_xid ON audit_events (xid, id);
CREATE INDEX audit_events_by_patient ON audit_events (patient_id, id) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_events_by_actor ON audit_events (actor_id, id) WHERE actor_id IS NOT NULL;
-- Events arrive in time order, so a BRIN index serves time ranges at almost no cost.
CREATE INDEX audit_events_by_time ON audit_events USING brin (recorded_at);

-- The chain: entry seq is event event_id, hash = H(prev_hash, encoding).
CREATE TABLE audit_chain (
    seq       bigint      PRIMARY KEY CHECK (seq > 0),
    event_id  bigint      NOT NULL UNIQUE REFERENCES audit_events (id),
    prev_hash bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash      bytea       NOT NULL CHECK (length(hash) = 32),
    sealed_at timestamptz NOT NULL DEFAULT now()
);

-- Signed checkpoints.
CREATE TABLE audit_checkpoints (
    size       bigint      PRIMARY KEY CHECK (size > 0),
    head       bytea       NOT NULL CHECK (length(head) = 32),
    signed_at  timestamptz NOT NULL,
    key_id     text        NOT NULL,
    signature  bytea       NOT NULL CHECK (length(signature) = 64),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Append-only, for the table owner too: rows are inserted, never changed or removed.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
