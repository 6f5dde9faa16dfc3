-- Patient records: demographics and clinical notes, every PHI field encrypted.
--
-- Columns ending in _enc hold sealed fields (src/crypto/field.rs): format version,
-- key version, nonce, ciphertext and tag, bound to table, column and row. Columns
-- ending in _bidx are truncated keyed blind indexes for exact-match lookup; they
-- collide on purpose, and candidates are confirmed after decryption. Only ids,
-- timestamps, statuses and blind indexes are in clear.

-- How many encryptions each data key has been used for (reserved in blocks), so a
-- key is rotated long before random 96-bit nonces could repeat.
ALTER TABLE data_keys ADD COLUMN encryptions bigint NOT NULL DEFAULT 0;

-- Staff (providers, admins) may carry a display name for access logs and the like.
-- Patients' names are PHI and live only encrypted in patients.
ALTER TABLE accounts ADD COLUMN display_name text CHECK (display_name IS NULL OR role <> 'patient');

CREATE TABLE patients (
    id                       uuid        PRIMARY KEY,
    -- The patient's own account, when they have one.
    account_id               uuid        UNIQUE REFERENCES accounts (id),
    created_by               uuid        NOT NULL REFERENCES accounts (id),
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    -- Increments on every change: the ETag.
    version                  integer     NOT NULL DEFAULT 1 CHECK (version > 0),
    legal_given_name_enc     bytea       NOT NULL,
    legal_family_name_enc    bytea       NOT NULL,
    preferred_name_enc       bytea,
    birth_date_enc           bytea       NOT NULL,
    sex_enc                  bytea,
    gender_identity_enc      bytea,
    phone_enc                bytea,
    email_enc                bytea,
    address_enc              bytea,
    mrn_enc                  bytea,
    insurance_id_enc         bytea,
    emergency_contact_enc    bytea,
    email_bidx               bytea,
    phone_bidx               bytea,
    mrn_bidx                 bytea,
    birth_date_family_bidx   bytea       NOT NULL
);
CREATE INDEX patients_by_email ON patients (email_bidx) WHERE email_bidx IS NOT NULL;
CREATE INDEX patients_by_phone ON patients (phone_bidx) WHERE phone_bidx IS NOT NULL;
CREATE INDEX patients_by_mrn ON patients (mrn_bidx) WHERE mrn_bidx IS NOT NULL;
CREATE INDEX patients_by_birth_date_family ON patients (birth_date_family_bidx);
CREATE INDEX patients_by_creator ON patients (created_by, created_at);

-- A clinical note a provider writes about a patient, usually for an appointment.
CREATE TABLE clinical_notes (
    id              uuid        PRIMARY KEY,
    patient_id      uuid        NOT NULL REFERENCES patients (id),
    author_id       uuid        NOT NULL REFERENCES accounts (id),
    -- The appointment it documents (its foreign key arrives with scheduling).
    appointment_id  uuid,
    status          text        NOT NULL CHECK (status IN ('draft', 'signed')),
    current_version integer     NOT NULL CHECK (current_version > 0),
    signed_at       timestamptz,
    signed_by       uuid        REFERENCES accounts (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'signed') = (signed_at IS NOT NULL AND signed_by IS NOT NULL))
);
CREATE INDEX clinical_notes_by_patient ON clinical_notes (patient_id, created_at);

-- Every version of a note is kept: edits of a draft and amendments after signing.
CREATE TABLE clinical_note_versions (
    id             uuid        PRIMARY KEY,
    note_id        uuid        NOT NULL REFERENCES clinical_notes (id),
    version        integer     NOT NULL CHECK (version > 0),
    kind           text        NOT NULL CHECK (kind IN ('draft', 'amendment')),
    author_id      uuid        NOT NULL REFERENCES accounts (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    subjective_enc bytea,
    objective_enc  bytea,
    assessment_enc bytea,
    plan_enc       bytea,
    UNIQUE (note_id, version)
);

-- Emergency access outside the care relationship: a reason, a time limit, a review.
CREATE TABLE break_glass_grants (
    id           uuid        PRIMARY KEY,
    provider_id  uuid        NOT NULL REFERENCES accounts (id),
    patient_id   uuid        NOT NULL REFERENCES patients (id),
    -- The provider's stated reason: free text, so encrypted like PHI.
    reason_enc   bytea       NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    CHECK (expires_at > started_at)
);
CREATE INDEX break_glass_live ON break_glass_grants (provider_id, patient_id, expires_at) WHERE ended_at IS NULL;
CREATE INDEX break_glass_to_end ON break_glass_grants (expires_at) WHERE ended_at IS NULL;
CREATE INDEX break_glass_by_start ON break_glass_grants (started_at);
