// @generated automatically by Diesel CLI.

pub mod sql_types {
    #[derive(diesel::query_builder::QueryId, Clone, Debug, diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "xid8", schema = "pg_catalog"))]
    pub struct Xid8;
}

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
    appointment_types (id) {
        id -> Uuid,
        provider_id -> Uuid,
        name -> Text,
        duration_minutes -> Int4,
        buffer_before_minutes -> Int4,
        buffer_after_minutes -> Int4,
        modality -> Text,
        min_notice_minutes -> Int4,
        booking_horizon_days -> Int4,
        max_per_day -> Nullable<Int4>,
        cancellation_cutoff_minutes -> Int4,
        active -> Bool,
        version -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        reminder_offsets_minutes -> Nullable<Array<Nullable<Int4>>>,
    }
}

diesel::table! {
    appointments (id) {
        id -> Uuid,
        provider_id -> Uuid,
        patient_id -> Uuid,
        type_id -> Uuid,
        status -> Text,
        starts_at -> Timestamptz,
        ends_at -> Timestamptz,
        buffer_before_minutes -> Int4,
        buffer_after_minutes -> Int4,
        occupied_from -> Timestamptz,
        occupied_to -> Timestamptz,
        modality -> Text,
        hold_expires_at -> Nullable<Timestamptz>,
        reason_enc -> Nullable<Bytea>,
        cancellation_code -> Nullable<Text>,
        cancellation_reason_enc -> Nullable<Bytea>,
        cancelled_by -> Nullable<Uuid>,
        cancelled_at -> Nullable<Timestamptz>,
        booked_by -> Uuid,
        version -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        opens_record -> Bool,
        record_accepted_at -> Nullable<Timestamptz>,
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
    availability_overrides (id) {
        id -> Uuid,
        provider_id -> Uuid,
        kind -> Text,
        starts_local -> Timestamp,
        ends_local -> Timestamp,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    availability_rules (id) {
        id -> Uuid,
        provider_id -> Uuid,
        weekday -> Int2,
        start_time -> Time,
        end_time -> Time,
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
    consult_relay (id) {
        id -> Int8,
        instance_id -> Uuid,
        body -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    consult_rooms (appointment_id) {
        appointment_id -> Uuid,
        instance_id -> Uuid,
        lease_until -> Timestamptz,
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
    event_stream (id) {
        id -> Bool,
        last_seq -> Int8,
        pruned_through -> Int8,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Xid8;

    events (id) {
        id -> Int8,
        kind -> Text,
        provider_id -> Nullable<Uuid>,
        patient_id -> Nullable<Uuid>,
        appointment_id -> Nullable<Uuid>,
        payload -> Jsonb,
        created_at -> Timestamptz,
        xid -> Xid8,
        seq -> Nullable<Int8>,
        account_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    idempotency_keys (id) {
        id -> Uuid,
        account_id -> Uuid,
        key -> Text,
        request_hash -> Bytea,
        status -> Nullable<Int4>,
        response_enc -> Nullable<Bytea>,
        created_at -> Timestamptz,
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
    notifications (id) {
        id -> Uuid,
        account_id -> Uuid,
        kind -> Text,
        appointment_id -> Nullable<Uuid>,
        payload -> Jsonb,
        late -> Bool,
        created_at -> Timestamptz,
        read_at -> Nullable<Timestamptz>,
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
    providers (id) {
        id -> Uuid,
        display_name -> Text,
        specialty -> Nullable<Text>,
        time_zone -> Text,
        bio -> Nullable<Text>,
        version -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
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

diesel::table! {
    reminder_jobs (id) {
        id -> Uuid,
        appointment_id -> Uuid,
        appointment_version -> Int4,
        offset_minutes -> Int4,
        due_at -> Timestamptz,
        status -> Text,
        late -> Bool,
        processed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Uuid,
        notification_id -> Uuid,
        body -> Jsonb,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_status -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        delivered_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    ws_tickets (hash) {
        hash -> Bytea,
        account_id -> Uuid,
        session_id -> Uuid,
        role -> Text,
        expires_at -> Timestamptz,
    }
}

diesel::joinable!(appointment_types -> providers (provider_id));
diesel::joinable!(appointments -> appointment_types (type_id));
diesel::joinable!(consult_rooms -> appointments (appointment_id));
diesel::joinable!(appointments -> patients (patient_id));
diesel::joinable!(appointments -> providers (provider_id));
diesel::joinable!(auth_sessions -> accounts (account_id));
diesel::joinable!(availability_overrides -> providers (provider_id));
diesel::joinable!(availability_rules -> providers (provider_id));
diesel::joinable!(break_glass_grants -> accounts (provider_id));
diesel::joinable!(break_glass_grants -> patients (patient_id));
diesel::joinable!(clinical_note_versions -> accounts (author_id));
diesel::joinable!(clinical_note_versions -> clinical_notes (note_id));
diesel::joinable!(clinical_notes -> appointments (appointment_id));
diesel::joinable!(clinical_notes -> patients (patient_id));
diesel::joinable!(idempotency_keys -> accounts (account_id));
diesel::joinable!(notifications -> accounts (account_id));
diesel::joinable!(notifications -> appointments (appointment_id));
diesel::joinable!(providers -> accounts (id));
diesel::joinable!(refresh_tokens -> auth_sessions (session_id));
diesel::joinable!(reminder_jobs -> appointments (appointment_id));
diesel::joinable!(webhook_deliveries -> notifications (notification_id));
diesel::joinable!(ws_tickets -> accounts (account_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    appointment_types,
    appointments,
    auth_sessions,
    availability_overrides,
    availability_rules,
    break_glass_grants,
    clinical_note_versions,
    clinical_notes,
    consult_relay,
    consult_rooms,
    data_keys,
    event_stream,
    events,
    idempotency_keys,
    index_keys,
    notifications,
    patients,
    providers,
    refresh_tokens,
    reminder_jobs,
    webhook_deliveries,
    ws_tickets,
);
