// @generated automatically by Diesel CLI.

diesel::table! {
    accounts (id) {
        id -> Uuid,
        role -> Text,
        email_bidx -> Bytea,
        email_enc -> Bytea,
        password_hash -> Text,
        disabled_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        display_name -> Nullable<Text>,
    }
}

diesel::table! {
    auth_sessions (id) {
        id -> Uuid,
        account_id -> Uuid,
        created_at -> Timestamptz,
        last_seen_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        revoked_reason -> Nullable<Text>,
    }
}

diesel::table! {
    break_glass_grants (id) {
        id -> Uuid,
        provider_id -> Uuid,
        patient_id -> Uuid,
        reason_enc -> Bytea,
        started_at -> Timestamptz,
        expires_at -> Timestamptz,
        ended_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    clinical_note_versions (id) {
        id -> Uuid,
        note_id -> Uuid,
        version -> Int4,
        kind -> Text,
        author_id -> Uuid,
        created_at -> Timestamptz,
        subjective_enc -> Nullable<Bytea>,
        objective_enc -> Nullable<Bytea>,
        assessment_enc -> Nullable<Bytea>,
        plan_enc -> Nullable<Bytea>,
    }
}

diesel::table! {
    clinical_notes (id) {
        id -> Uuid,
        patient_id -> Uuid,
        author_id -> Uuid,
        appointment_id -> Nullable<Uuid>,
        status -> Text,
        current_version -> Int4,
        signed_at -> Nullable<Timestamptz>,
        signed_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    data_keys (version) {
        version -> Int4,
        wrapped_key -> Bytea,
        kek_id -> Text,
        created_at -> Timestamptz,
        retired_at -> Nullable<Timestamptz>,
        encryptions -> Int8,
    }
}

diesel::table! {
    index_keys (id) {
        id -> Int2,
        wrapped_key -> Bytea,
        kek_id -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    patients (id) {
        id -> Uuid,
        account_id -> Nullable<Uuid>,
        created_by -> Uuid,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        version -> Int4,
        legal_given_name_enc -> Bytea,
        legal_family_name_enc -> Bytea,
        preferred_name_enc -> Nullable<Bytea>,
        birth_date_enc -> Bytea,
        sex_enc -> Nullable<Bytea>,
        gender_identity_enc -> Nullable<Bytea>,
        phone_enc -> Nullable<Bytea>,
        email_enc -> Nullable<Bytea>,
        address_enc -> Nullable<Bytea>,
        mrn_enc -> Nullable<Bytea>,
        insurance_id_enc -> Nullable<Bytea>,
        emergency_contact_enc -> Nullable<Bytea>,
        email_bidx -> Nullable<Bytea>,
        phone_bidx -> Nullable<Bytea>,
        mrn_bidx -> Nullable<Bytea>,
        birth_date_family_bidx -> Bytea,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Bytea,
        session_id -> Uuid,
        issued_at -> Timestamptz,
        expires_at -> Timestamptz,
        rotated_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(auth_sessions -> accounts (account_id));
diesel::joinable!(break_glass_grants -> accounts (provider_id));
diesel::joinable!(break_glass_grants -> patients (patient_id));
diesel::joinable!(clinical_note_versions -> accounts (author_id));
diesel::joinable!(clinical_note_versions -> clinical_notes (note_id));
diesel::joinable!(clinical_notes -> patients (patient_id));
diesel::joinable!(refresh_tokens -> auth_sessions (session_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    auth_sessions,
    break_glass_grants,
    clinical_note_versions,
    clinical_notes,
    data_keys,
    index_keys,
    patients,
    refresh_tokens,
);
