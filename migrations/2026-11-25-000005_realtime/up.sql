-- The real-time gateway: a commit-ordered event stream for resume, notifications,
-- reminder jobs, webhook deliveries and WebSocket tickets.
--
-- Events are written by business transactions into `events` (the outbox) with the
-- writing transaction's id. Ids are handed out at insert time, not in commit order, so
-- a client resuming "after event 100" could miss event 99 committed later. The
-- sequencer below therefore numbers events in commit-safe order: only events whose
-- transaction precedes every transaction still running (xid < the snapshot's xmin)
-- get a `seq`, in (xid, id) order, one sequencer at a time. `seq` is what clients see
-- and resume from; it never goes backwards and never skips an event that later
-- commits.

ALTER TABLE events
    ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN seq bigint UNIQUE,
    -- The one account an event is for (notifications, session ends), if any.
    ADD COLUMN account_id uuid;
CREATE INDEX events_unsequenced ON events (xid, id) WHERE seq IS NULL;
CREATE INDEX events_by_account ON events (account_id, seq) WHERE account_id IS NOT NULL;
CREATE INDEX events_by_age ON events (created_at);

-- The sequencer's high-water mark and the retention horizon.
CREATE TABLE event_stream (
    id             boolean     PRIMARY KEY DEFAULT true CHECK (id),
    last_seq       bigint      NOT NULL DEFAULT 0,
    -- Events with seq <= this were pruned: resuming from before it needs a resync.
    pruned_through bigint      NOT NULL DEFAULT 0
);
INSERT INTO event_stream DEFAULT VALUES;

-- After commit, NOTIFY carries only an event id (payloads stop at 8000 bytes): every
-- instance then sequences and reads from the table.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('carewire_events', (SELECT max(id) FROM inserted)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- Numbers up to `batch` committed events; returns the last seq given out. Sequencers
-- queue on the event_stream row, so numbering is gap-free and in order.
CREATE FUNCTION sequence_events(batch integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    horizon xid8 := pg_snapshot_xmin(pg_current_snapshot());
    base bigint;
    n integer;
BEGIN
    SELECT last_seq INTO base FROM event_stream FOR UPDATE;
    WITH next AS (
        SELECT id, row_number() OVER (ORDER BY xid, id) AS rn
          FROM (SELECT id, xid FROM events
                 WHERE seq IS NULL AND xid < horizon
                 ORDER BY xid, id LIMIT batch) candidates
    )
    UPDATE events e SET seq = base + next.rn FROM next WHERE e.id = next.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        UPDATE event_stream SET last_seq = base + n;
        PERFORM pg_notify('carewire_seq', (base + n)::text);
    END IF;
    RETURN base + n;
END $$;

-- What a user is told: reminders today. Payloads carry ids and times, never PHI.
CREATE TABLE notifications (
    id             uuid        PRIMARY KEY,
    account_id     uuid        NOT NULL REFERENCES accounts (id),
    kind           text        NOT NULL,
    appointment_id uuid        REFERENCES appointments (id),
    payload        jsonb       NOT NULL DEFAULT '{}',
    late           boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    read_at        timestamptz
);
CREATE INDEX notifications_by_account ON notifications (account_id, created_at DESC, id DESC);
CREATE INDEX notifications_unread ON notifications (account_id) WHERE read_at IS NULL;

-- Reminder offsets per appointment type (minutes before the start); NULL: the default.
ALTER TABLE appointment_types ADD COLUMN reminder_offsets_minutes integer[]
    CHECK (cardinality(reminder_offsets_minutes) <= 5);

-- One job per reminder of one version of an appointment. Jobs are replaced in the
-- transaction that changes the appointment, so they always match its current time.
CREATE TABLE reminder_jobs (
    id                  uuid        PRIMARY KEY,
    appointment_id      uuid        NOT NULL REFERENCES appointments (id),
    appointment_version integer     NOT NULL,
    offset_minutes      integer     NOT NULL CHECK (offset_minutes > 0),
    due_at              timestamptz NOT NULL,
    status              text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'skipped')),
    late                boolean     NOT NULL DEFAULT false,
    processed_at        timestamptz,
    UNIQUE (appointment_id, appointment_version, offset_minutes)
);
CREATE INDEX reminder_jobs_due ON reminder_jobs (due_at) WHERE status = 'pending';
CREATE INDEX reminder_jobs_by_appointment ON reminder_jobs (appointment_id) WHERE status = 'pending';

-- Notifications going out through the webhook channel, retried with backoff.
CREATE TABLE webhook_deliveries (
    id              uuid        PRIMARY KEY,
    notification_id uuid        NOT NULL REFERENCES notifications (id),
    body            jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- Single-use WebSocket tickets, stored hashed, valid for seconds.
CREATE TABLE ws_tickets (
    hash       bytea       PRIMARY KEY CHECK (length(hash) = 32),
    account_id uuid        NOT NULL REFERENCES accounts (id),
    session_id uuid        NOT NULL,
    role       text        NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX ws_tickets_by_expiry ON ws_tickets (expires_at);
