//! The care relationship that appointments establish: a provider and a patient with a
//! live or recent appointment (held, booked, arrived or fulfilled) starting within the
//! window before or after now, which opens the record: not one the provider booked
//! for a patient they had no relationship with, until the patient accepts it.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::appointments;

/// Which appointments count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Every appointment that opens the record.
    Opening,
    /// Only those someone other than the provider booked, or the patient accepted:
    /// what a provider's new booking may build on, so that bookings a provider made
    /// themselves cannot keep a record open one after another, unasked.
    NotSelfMade,
}

/// Whether the provider has an appointment with the patient within `window` of `now`.
pub fn has_appointment_within(
    conn: &mut PgConnection,
    provider_id: Uuid,
    patient_id: Uuid,
    window: chrono::Duration,
    now: DateTime<Utc>,
    counting: Counting,
) -> QueryResult<bool> {
    let mut query = appointments::table.into_boxed();
    if counting == Counting::NotSelfMade {
        query = query.filter(
            appointments::booked_by
                .ne(provider_id)
                .or(appointments::record_accepted_at.is_not_null()),
        );
    }
    diesel::select(diesel::dsl::exists(
        query
            .filter(appointments::provider_id.eq(provider_id))
            .filter(appointments::patient_id.eq(patient_id))
            .filter(appointments::status.eq_any(["pending", "booked", "arrived", "fulfilled"]))
            // A provider's booking of a patient they had no relationship with opens
            // nothing until the patient accepts it (scheduling::rules::opens_record).
            .filter(appointments::opens_record.eq(true))
            .filter(appointments::starts_at.ge(now - window))
            .filter(appointments::starts_at.le(now + window)),
    ))
    .get_result(conn)
}
