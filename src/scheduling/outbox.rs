//! The events outbox: every change to appointments and slots is written here in the
//! same transaction as the change, for the real-time gateway to deliver after commit.
//! Payloads carry ids, statuses and times, never PHI.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde_json::{Value, json};

use super::appointments::AppointmentRow;
use crate::schema::events;

/// The kinds of event.
pub mod kind {
    pub const APPOINTMENT_BOOKED: &str = "appointment.booked";
    pub const APPOINTMENT_RESCHEDULED: &str = "appointment.rescheduled";
    pub const APPOINTMENT_CANCELLED: &str = "appointment.cancelled";
    pub const APPOINTMENT_STATUS_CHANGED: &str = "appointment.status_changed";
    pub const SLOT_HELD: &str = "slot.held";
    pub const SLOT_RELEASED: &str = "slot.released";
    pub const AVAILABILITY_CHANGED: &str = "availability.changed";
}

/// Records an event about an appointment; `extra` is merged into the payload.
pub fn emit(
    conn: &mut PgConnection,
    kind: &str,
    appointment: &AppointmentRow,
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
