//! The events outbox: every change clients hear about (appointments, slots,
//! availability, notifications, ended sessions) is written here in the same
//! transaction as the change, for the real-time gateway to deliver after commit.
//! Payloads carry ids, statuses and times, never PHI.
//!
//! Inserting is all a writer does (no NOTIFY: it would serialize commits cluster-wide);
//! each instance's listener finds new rows and the sequencer (`realtime::bus`) numbers
//! them in commit order.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde_json::{Value, json};

use crate::schema::events;

/// The kinds of event.
pub mod kind {
    pub const APPOINTMENT_BOOKED: &str = "appointment.booked";
    pub const APPOINTMENT_RESCHEDULED: &str = "appointment.rescheduled";
    pub const APPOINTMENT_CANCELLED: &str = "appointment.cancelled";
    pub const APPOINTMENT_STATUS_CHANGED: &str = "appointment.status_changed";
    /// The patient accepted a booking, which now opens their record to its provider.
    pub const APPOINTMENT_ACCEPTED: &str = "appointment.accepted";
    pub const SLOT_HELD: &str = "slot.held";
    pub const SLOT_RELEASED: &str = "slot.released";
    pub const AVAILABILITY_CHANGED: &str = "availability.changed";
    /// A notification for one account (a reminder).
    pub const NOTIFICATION: &str = "notification";
    /// A session ended (logout, refresh-token reuse): its sockets close.
    pub const SESSION_ENDED: &str = "session.ended";
    /// An account was disabled: all its sockets close.
    pub const ACCOUNT_DISABLED: &str = "account.disabled";
}

/// What an appointment event says about the appointment: ids, status, times and
/// version (never the reason or other PHI).
#[derive(Debug, Clone, Copy)]
pub struct AppointmentFacts<'a> {
    pub id: uuid::Uuid,
    pub provider_id: uuid::Uuid,
    pub patient_id: uuid::Uuid,
    pub type_id: uuid::Uuid,
    pub status: &'a str,
    pub starts_at: chrono::DateTime<chrono::Utc>,
    pub ends_at: chrono::DateTime<chrono::Utc>,
    pub version: i32,
}

/// Records an event about an appointment; `extra` is merged into the payload.
pub fn emit(
    conn: &mut PgConnection,
    kind: &str,
    appointment: AppointmentFacts<'_>,
    extra: Value,
) -> QueryResult<i64> {
    let mut payload = json!({
        "appointment_id": appointment.id,
        "provider_id": appointment.provider_id,
        "patient_id": appointment.patient_id,
        "type_id": appointment.type_id,
        "status": appointment.status,
        "starts_at": appointment.starts_at,
        "ends_at": appointment.ends_at,
        "version": appointment.version,
    });
    if let (Some(target), Value::Object(more)) = (payload.as_object_mut(), extra) {
        target.extend(more);
    }
    diesel::insert_into(events::table)
        .values((
            events::kind.eq(kind),
            events::provider_id.eq(Some(appointment.provider_id)),
            events::patient_id.eq(Some(appointment.patient_id)),
            events::appointment_id.eq(Some(appointment.id)),
            events::payload.eq(payload),
        ))
        .returning(events::id)
        .get_result(conn)
}

/// Records a provider-wide event (no patient, no appointment).
pub fn emit_for_provider(
    conn: &mut PgConnection,
    kind: &str,
    provider_id: uuid::Uuid,
    payload: Value,
) -> QueryResult<i64> {
    diesel::insert_into(events::table)
        .values((
            events::kind.eq(kind),
            events::provider_id.eq(Some(provider_id)),
            events::payload.eq(payload),
        ))
        .returning(events::id)
        .get_result(conn)
}

/// Records that a provider's free slots may have changed (hours, overrides, types,
/// time zone): subscribers of the provider's slots look again.
pub fn availability_changed(conn: &mut PgConnection, provider_id: uuid::Uuid) -> QueryResult<i64> {
    emit_for_provider(
        conn,
        kind::AVAILABILITY_CHANGED,
        provider_id,
        serde_json::json!({ "provider_id": provider_id }),
    )
}

/// Records an event for one account only.
pub fn emit_for_account(
    conn: &mut PgConnection,
    kind: &str,
    account_id: uuid::Uuid,
    payload: Value,
) -> QueryResult<i64> {
    diesel::insert_into(events::table)
        .values((
            events::kind.eq(kind),
            events::account_id.eq(Some(account_id)),
            events::payload.eq(payload),
        ))
        .returning(events::id)
        .get_result(conn)
}
