//! Which reminders an appointment has: one pending job per offset, for its current
//! version, while it is booked and the reminder is still ahead.

use chrono::{DateTime, Duration, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::reminder_jobs;

/// The appointment, as far as its reminders care.
#[derive(Debug, Clone, Copy)]
pub struct Reminded {
    pub appointment_id: Uuid,
    pub version: i32,
    pub starts_at: DateTime<Utc>,
    /// Only a booked appointment has reminders.
    pub booked: bool,
}

/// The clock reading and the server's default offsets (`CAREWIRE_REMINDER_OFFSETS`).
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    pub now: DateTime<Utc>,
    pub default_offsets_minutes: &'a [i32],
}

/// The due times of the reminders a booked appointment starting at `starts_at` still
/// has at `now`: offsets whose moment has passed are not sent at all (they were never
/// due while the appointment was booked).
pub fn due_times(
    starts_at: DateTime<Utc>,
    now: DateTime<Utc>,
    offsets_minutes: &[i32],
) -> Vec<(i32, DateTime<Utc>)> {
    offsets_minutes
        .iter()
        .map(|&m| (m, starts_at - Duration::minutes(i64::from(m))))
        .filter(|(_, due)| *due > now)
        .collect()
}

/// Replaces the appointment's pending reminders with those of its current state, at
/// the type's offsets (`type_offsets`) or else the default. Call in the transaction
/// that changed the appointment. Returns how many are pending.
pub fn sync(
    conn: &mut PgConnection,
    row: Reminded,
    type_offsets: Option<&[i32]>,
    plan: Plan<'_>,
) -> QueryResult<usize> {
    diesel::delete(
        reminder_jobs::table
            .filter(reminder_jobs::appointment_id.eq(row.appointment_id))
            .filter(reminder_jobs::status.eq("pending")),
    )
    .execute(conn)?;
    if !row.booked {
        return Ok(0);
    }
    let offsets = type_offsets.unwrap_or(plan.default_offsets_minutes);
    let jobs: Vec<_> = due_times(row.starts_at, plan.now, offsets)
        .into_iter()
        .map(|(offset, due)| {
            (
                reminder_jobs::id.eq(Uuid::now_v7()),
                reminder_jobs::appointment_id.eq(row.appointment_id),
                reminder_jobs::appointment_version.eq(row.version),
                reminder_jobs::offset_minutes.eq(offset),
                reminder_jobs::due_at.eq(due),
            )
        })
        .collect();
    diesel::insert_into(reminder_jobs::table)
        .values(&jobs)
        .on_conflict_do_nothing()
        .execute(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reminders_still_ahead_are_scheduled() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let starts = now + Duration::minutes(90);
        let due = due_times(starts, now, &[1440, 60, 10]);
        assert_eq!(
            due,
            vec![
                (60, starts - Duration::minutes(60)),
                (10, starts - Duration::minutes(10))
            ]
        );
    }

    #[test]
    fn an_appointment_in_the_past_has_no_reminders() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(due_times(now - Duration::minutes(5), now, &[10]).is_empty());
    }
}
