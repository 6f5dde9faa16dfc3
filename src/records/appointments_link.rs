//! The care relationship that appointments establish: a provider and a patient with a
//! live or recent appointment (held, booked, arrived or fulfilled) starting within the
//! window before or after now.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::appointments;

/// Whether the provider has an appointment with the patient within `window` of `now`.
pub fn has_appointment_within(
    conn: &mut PgConnection,
    provider_id: Uuid,
    patient_id: Uuid,
    window: chrono::Duration,
    now: DateTime<Utc>,
) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        appointments::table
            .filter(appointments::provider_id.eq(provider_id))
            .filter(appointments::patient_id.eq(patient_id))
            .filter(appointments::status.eq_any(["pending", "booked", "arrived", "fulfilled"]))
            .filter(appointments::starts_at.ge(now - window))
            .filter(appointments::starts_at.le(now + window)),
    ))
    .get_result(conn)
}
