-- Scheduling: providers, appointment types, availability, appointments, and the
-- events outbox the real-time gateway delivers from.
--
-- No double booking is enforced here, not in application code: exclusion constraints
-- forbid two appointments that occupy time from overlapping for one provider (with
-- buffers) or for one patient, whatever path writes. Holds that have expired never
-- block: a trigger cancels them before the constraint is checked.

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- A provider's public profile; its id is the provider's account id.
CREATE TABLE providers (
    id           uuid        PRIMARY KEY REFERENCES accounts (id),
    display_name text        NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    specialty    text        CHECK (length(specialty) <= 100),
    time_zone    text        NOT NULL,
    bio          text        CHECK (length(bio) <= 2000),
    version      integer     NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE appointment_types (
    id                          uuid        PRIMARY KEY,
    provider_id                 uuid        NOT NULL REFERENCES providers (id),
    name                        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    duration_minutes            integer     NOT NULL CHECK (duration_minutes BETWEEN 5 AND 480),
    buffer_before_minutes       integer     NOT NULL DEFAULT 0 CHECK (buffer_before_minutes BETWEEN 0 AND 240),
    buffer_after_minutes        integer     NOT NULL DEFAULT 0 CHECK (buffer_after_minutes BETWEEN 0 AND 240),
    modality                    text        NOT NULL CHECK (modality IN ('video', 'in_person')),
    min_notice_minutes          integer     NOT NULL DEFAULT 0 CHECK (min_notice_minutes BETWEEN 0 AND 43200),
    booking_horizon_days        integer     NOT NULL DEFAULT 60 CHECK (booking_horizon_days BETWEEN 1 AND 730),
    max_per_day                 integer     CHECK (max_per_day > 0),
    cancellation_cutoff_minutes integer     NOT NULL DEFAULT 0 CHECK (cancellation_cutoff_minutes BETWEEN 0 AND 43200),
    active                      boolean     NOT NULL DEFAULT true,
    version                     integer     NOT NULL DEFAULT 1,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX appointment_types_by_provider ON appointment_types (provider_id);

-- Weekly hours, in the provider's wall-clock time. A window whose end is not after
-- its start runs past midnight into the next day.
CREATE TABLE availability_rules (
    id          uuid     PRIMARY KEY,
    provider_id uuid     NOT NULL REFERENCES providers (id),
    -- ISO weekday: 1 = Monday … 7 = Sunday.
    weekday     smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    start_time  time     NOT NULL,
    end_time    time     NOT NULL,
    CHECK (start_time <> end_time)
);
CREATE INDEX availability_rules_by_provider ON availability_rules (provider_id);

-- Dated exceptions, in wall-clock time: extra hours, or blocked time (a day off, time off).
CREATE TABLE availability_overrides (
    id          uuid        PRIMARY KEY,
    provider_id uuid        NOT NULL REFERENCES providers (id),
    kind        text        NOT NULL CHECK (kind IN ('extra', 'blocked')),
    starts_local timestamp  NOT NULL,
    ends_local   timestamp  NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_local > starts_local)
);
CREATE INDEX availability_overrides_by_provider ON availability_overrides (provider_id, starts_local);

-- Statuses follow FHIR R4 Appointment.status.
CREATE TABLE appointments (
    id                uuid        PRIMARY KEY,
    provider_id       uuid        NOT NULL REFERENCES providers (id),
    patient_id        uuid        NOT NULL REFERENCES patients (id),
    type_id           uuid        NOT NULL REFERENCES appointment_types (id),
    status            text        NOT NULL CHECK (status IN
                          ('proposed', 'pending', 'booked', 'arrived', 'fulfilled', 'cancelled', 'noshow', 'entered-in-error')),
    starts_at         timestamptz NOT NULL,
    ends_at           timestamptz NOT NULL,
    buffer_before_minutes integer NOT NULL DEFAULT 0 CHECK (buffer_before_minutes >= 0),
    buffer_after_minutes  integer NOT NULL DEFAULT 0 CHECK (buffer_after_minutes >= 0),
    -- The time the appointment keeps the provider busy, buffers included; kept by the
    -- trigger below (timestamptz arithmetic is not immutable, so not a generated column).
    occupied_from     timestamptz NOT NULL,
    occupied_to       timestamptz NOT NULL,
    modality          text        NOT NULL CHECK (modality IN ('video', 'in_person')),
    -- A pending hold lapses at this time.
    hold_expires_at   timestamptz,
    -- The reason for visit is PHI: sealed.
    reason_enc        bytea,
    cancellation_code text,
    cancellation_reason_enc bytea,
    cancelled_by      uuid        REFERENCES accounts (id),
    cancelled_at      timestamptz,
    booked_by         uuid        NOT NULL REFERENCES accounts (id),
    version           integer     NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    CHECK (status <> 'pending' OR hold_expires_at IS NOT NULL),
    CONSTRAINT appointments_no_double_booking EXCLUDE USING gist (
        provider_id WITH =, tstzrange(occupied_from, occupied_to, '[)') WITH &&
    ) WHERE (status IN ('pending', 'booked', 'arrived')),
    CONSTRAINT appointments_no_patient_overlap EXCLUDE USING gist (
        patient_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&
    ) WHERE (status IN ('pending', 'booked', 'arrived'))
);
CREATE INDEX appointments_by_provider ON appointments (provider_id, starts_at);
CREATE INDEX appointments_by_patient ON appointments (patient_id, starts_at);
CREATE INDEX appointments_holds ON appointments (hold_expires_at) WHERE status = 'pending';

-- Notes document appointments.
ALTER TABLE clinical_notes ADD CONSTRAINT clinical_notes_appointment_fk
    FOREIGN KEY (appointment_id) REFERENCES appointments (id);

-- The outbox: every change to appointments and slots, written in the same transaction,
-- delivered after commit. Payloads carry ids, statuses and times, never PHI.
CREATE TABLE events (
    id             bigserial   PRIMARY KEY,
    kind           text        NOT NULL,
    provider_id    uuid,
    patient_id     uuid,
    appointment_id uuid,
    payload        jsonb       NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_by_provider ON events (provider_id, id);
CREATE INDEX events_by_patient ON events (patient_id, id);

-- Idempotency-Key: a retry of a change returns the original answer.
CREATE TABLE idempotency_keys (
    id            uuid        PRIMARY KEY,
    account_id    uuid        NOT NULL REFERENCES accounts (id),
    key           text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash  bytea       NOT NULL,
    status        integer,
    -- The stored answer may hold PHI (a reason for visit): sealed.
    response_enc  bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Keeps the occupied range, and lets lapsed holds go before the constraints look.
CREATE FUNCTION appointments_before_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lapsed record;
BEGIN
    NEW.occupied_from := NEW.starts_at - make_interval(mins => NEW.buffer_before_minutes);
    NEW.occupied_to := NEW.ends_at + make_interval(mins => NEW.buffer_after_minutes);
    IF NEW.status IN ('pending', 'booked', 'arrived') THEN
        FOR lapsed IN
            UPDATE appointments a
               SET status = 'cancelled', cancellation_code = 'hold_expired', cancelled_at = now(),
                   updated_at = now(), version = a.version + 1
             WHERE a.status = 'pending' AND a.hold_expires_at <= now() AND a.id <> NEW.id
               AND ((a.provider_id = NEW.provider_id
                     AND tstzrange(a.occupied_from, a.occupied_to, '[)') && tstzrange(NEW.occupied_from, NEW.occupied_to, '[)'))
                 OR (a.patient_id = NEW.patient_id
                     AND tstzrange(a.starts_at, a.ends_at, '[)') && tstzrange(NEW.starts_at, NEW.ends_at, '[)')))
            RETURNING a.id, a.provider_id, a.patient_id, a.starts_at, a.ends_at, a.version
        LOOP
            PERFORM record_hold_expiry(lapsed.id, lapsed.provider_id, lapsed.patient_id, lapsed.starts_at, lapsed.ends_at, lapsed.version);
        END LOOP;
    END IF;
    RETURN NEW;
END $$;

-- What a lapsed hold leaves behind: a slot.released event and an audit event, like any
-- other change.
CREATE FUNCTION record_hold_expiry(appointment uuid, provider uuid, patient uuid, starts timestamptz, ends timestamptz, ver integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (kind, provider_id, patient_id, appointment_id, payload)
    VALUES ('slot.released', provider, patient, appointment,
            jsonb_build_object('appointment_id', appointment, 'provider_id', provider, 'starts_at', starts,
                               'ends_at', ends, 'status', 'cancelled', 'cause', 'hold_expired', 'version', ver));
    INSERT INTO audit_events (actor_kind, actor_role, action, resource_type, resource_id, patient_id, outcome, purpose, details)
    VALUES ('system', 'hold_expiry', 'update', 'appointment', appointment, patient, 'success', 'HOPERAT',
            jsonb_build_object('change', jsonb_build_object('code', 'hold_expired')));
END $$;

CREATE TRIGGER appointments_before_write BEFORE INSERT OR UPDATE ON appointments
    FOR EACH ROW EXECUTE FUNCTION appointments_before_write();

-- Lapses every hold due now (the sweeper calls it); returns how many.
CREATE FUNCTION expire_holds() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    lapsed record;
    n integer := 0;
BEGIN
    FOR lapsed IN
        UPDATE appointments a
           SET status = 'cancelled', cancellation_code = 'hold_expired', cancelled_at = now(),
               updated_at = now(), version = a.version + 1
         WHERE a.id IN (SELECT id FROM appointments WHERE status = 'pending' AND hold_expires_at <= now()
                        ORDER BY hold_expires_at LIMIT 500 FOR UPDATE SKIP LOCKED)
        RETURNING a.id, a.provider_id, a.patient_id, a.starts_at, a.ends_at, a.version
    LOOP
        PERFORM record_hold_expiry(lapsed.id, lapsed.provider_id, lapsed.patient_id, lapsed.starts_at, lapsed.ends_at, lapsed.version);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
