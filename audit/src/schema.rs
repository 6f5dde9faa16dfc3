// @generated automatically by Diesel CLI.

pub mod sql_types {
    #[derive(diesel::query_builder::QueryId, Clone, Debug, diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "xid8", schema = "pg_catalog"))]
    pub struct Xid8;
}

diesel::table! {
    audit_chain (seq) {
        seq -> Int8,
        event_id -> Int8,
        prev_hash -> Bytea,
        hash -> Bytea,
        sealed_at -> Timestamptz,
    }
}

diesel::table! {
    audit_checkpoints (size) {
        size -> Int8,
        head -> Bytea,
        signed_at -> Timestamptz,
        key_id -> Text,
        signature -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Xid8;

    audit_events (id) {
        id -> Int8,
        xid -> Xid8,
        recorded_at -> Timestamptz,
        actor_kind -> Text,
        actor_id -> Nullable<Uuid>,
        actor_role -> Nullable<Text>,
        action -> Text,
        resource_type -> Text,
        resource_id -> Nullable<Uuid>,
        patient_id -> Nullable<Uuid>,
        outcome -> Text,
        failure_reason -> Nullable<Text>,
        purpose -> Text,
        request_id -> Nullable<Text>,
        client_ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        details -> Jsonb,
    }
}

diesel::joinable!(audit_chain -> audit_events (event_id));

diesel::allow_tables_to_appear_in_same_query!(audit_chain, audit_checkpoints, audit_events,);
