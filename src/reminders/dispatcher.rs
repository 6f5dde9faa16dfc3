//! Sends due reminders: claim, notify through every channel, mark, in one transaction.
//!
//! Each round claims up to [`BATCH`] due jobs with `FOR UPDATE OF j SKIP LOCKED`:
//! instances never claim the same job, and a job is marked sent in the transaction
//! that writes its notifications, so it goes out exactly once even if an instance dies
//! mid-round (its transaction rolls back and another instance claims the job). The
//! work is set-based (a few statements per batch, not per job) so a burst of
//! reminders due in the same minute drains in seconds.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use serde_json::json;
use uuid::Uuid;

use crate::audit::{Actor, AuditEvent, Code, DetailValue, action, purpose, resource};
use crate::error::Error;
use crate::notifications::channels::Channel;
use crate::notifications::{self, Notification};
use crate::schema::reminder_jobs;

/// Jobs claimed per round, per instance.
pub const BATCH: i64 = 1000;

#[derive(Debug, QueryableByName)]
struct DueJob {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Integer)]
    job_version: i32,
    #[diesel(sql_type = Integer)]
    offset_minutes: i32,
    #[diesel(sql_type = Timestamptz)]
    due_at: DateTime<Utc>,
    #[diesel(sql_type = SqlUuid)]
    appointment_id: Uuid,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Integer)]
    version: i32,
    #[diesel(sql_type = Timestamptz)]
    starts_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    ends_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    modality: String,
    #[diesel(sql_type = SqlUuid)]
    provider_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    patient_id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    patient_account: Option<Uuid>,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub sent: usize,
    pub late: usize,
    /// Jobs dropped: the appointment had started, or changed since (defensive: the
    /// scheduler replaces jobs on every change).
    pub skipped: usize,
}

impl Round {
    pub fn claimed(&self) -> usize {
        self.sent + self.skipped
    }
}

/// Runs one round at `now`. `late_after`: how long after its due time a reminder
/// counts as late.
pub fn run_once(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    late_after: chrono::Duration,
    channels: &[Box<dyn Channel>],
) -> Result<Round, Error> {
    conn.transaction(|conn| {
        let due: Vec<DueJob> = diesel::sql_query(
            "SELECT j.id, j.appointment_version AS job_version, j.offset_minutes, j.due_at, \
                    a.id AS appointment_id, a.status, a.version, a.starts_at, a.ends_at, a.modality, \
                    a.provider_id, a.patient_id, p.account_id AS patient_account \
               FROM reminder_jobs j \
               JOIN appointments a ON a.id = j.appointment_id \
               JOIN patients p ON p.id = a.patient_id \
              WHERE j.status = 'pending' AND j.due_at <= $1 \
              ORDER BY j.due_at \
              LIMIT $2 \
                FOR UPDATE OF j SKIP LOCKED",
        )
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(BATCH)
        .load(conn)?;
        if due.is_empty() {
            return Ok(Round::default());
        }

        let mut round = Round::default();
        let (mut sent, mut late, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        let mut outgoing: Vec<Notification> = Vec::with_capacity(due.len() * 2);
        let mut audit: Vec<AuditEvent> = Vec::with_capacity(due.len());
        for job in &due {
            // Started already (the server was down past it), or changed since.
            if job.starts_at <= now || job.status != "booked" || job.version != job.job_version {
                skipped.push(job.id);
                round.skipped += 1;
                continue;
            }
            let is_late = now - job.due_at > late_after;
            let payload = json!({
                "appointment_id": job.appointment_id,
                "provider_id": job.provider_id,
                "starts_at": job.starts_at,
                "ends_at": job.ends_at,
                "modality": job.modality,
                "minutes_before": job.offset_minutes,
                "due_at": job.due_at,
            });
            let recipients = job
                .patient_account
                .into_iter()
                .chain(std::iter::once(job.provider_id));
            for account_id in recipients {
                outgoing.push(Notification {
                    id: Uuid::now_v7(),
                    account_id,
                    kind: notifications::kind::APPOINTMENT_REMINDER.to_owned(),
                    appointment_id: Some(job.appointment_id),
                    payload: payload.clone(),
                    late: is_late,
                    created_at: now,
                    read_at: None,
                });
            }
            audit.push(
                AuditEvent::new(
                    Actor::System {
                        component: Code::new("reminders"),
                    },
                    action::EXECUTE,
                    resource::APPOINTMENT,
                    purpose::OPERATIONS,
                )
                .resource(job.appointment_id)
                .patient(job.patient_id)
                .detail(
                    Code::new("reminder"),
                    DetailValue::Count(i64::from(job.offset_minutes)),
                )
                .detail(
                    Code::new("timing"),
                    DetailValue::Code(if is_late {
                        Code::new("late")
                    } else {
                        Code::new("on_time")
                    }),
                ),
            );
            if is_late {
                late.push(job.id);
                round.late += 1;
            } else {
                sent.push(job.id);
            }
            round.sent += 1;
        }

        notifications::insert_many(conn, &outgoing)?;
        for channel in channels {
            channel.deliver(conn, &outgoing)?;
        }
        carewire_audit::store::record_many(conn, &audit)?;
        for (ids, status, is_late) in [
            (&sent, "sent", false),
            (&late, "sent", true),
            (&skipped, "skipped", false),
        ] {
            if ids.is_empty() {
                continue;
            }
            diesel::update(reminder_jobs::table.filter(reminder_jobs::id.eq_any(ids)))
                .set((
                    reminder_jobs::status.eq(status),
                    reminder_jobs::late.eq(is_late),
                    reminder_jobs::processed_at.eq(Some(now)),
                ))
                .execute(conn)?;
        }
        Ok(round)
    })
}
