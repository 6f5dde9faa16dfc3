//! Notifications: what a user is told (today, appointment reminders), kept until they
//! read it, and handed to every delivery channel in the transaction that creates it.
//!
//! - [`channels`]: the delivery channels behind one trait: the WebSocket (through the
//!   events outbox) and a signed webhook.
//! - [`webhook`]: the webhook worker: signing, sending, retries with backoff.
//! - [`routes`]: `GET /v1/me/notifications`, `POST /v1/me/notifications/{id}/read`.
//!
//! Payloads carry ids, times and codes, never PHI: a reminder names the appointment,
//! not the patient or the reason for visit.

pub mod channels;
pub mod routes;
pub mod webhook;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use crate::schema::notifications;

/// A stored notification.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = notifications)]
pub struct Notification {
    pub id: Uuid,
    /// Who it is for (not shown: it is always the caller).
    #[serde(skip)]
    pub account_id: Uuid,
    /// What happened: `appointment.reminder`.
    pub kind: String,
    pub appointment_id: Option<Uuid>,
    /// Details by kind; ids, times and codes only.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Sent later than it was due (the server was down at the time).
    pub late: bool,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

pub mod kind {
    pub const APPOINTMENT_REMINDER: &str = "appointment.reminder";
}

/// Stores notifications (one statement per few thousand).
pub fn insert_many(conn: &mut PgConnection, batch: &[Notification]) -> QueryResult<usize> {
    let mut written = 0;
    // 8 columns a row; PostgreSQL binds at most 65535 parameters.
    for chunk in batch.chunks(8000) {
        written += diesel::insert_into(notifications::table)
            .values(chunk)
            .execute(conn)?;
    }
    Ok(written)
}

/// The account's notifications, newest first (ids are time-ordered UUIDv7), before
/// the cursor id.
pub fn list(
    conn: &mut PgConnection,
    account_id: Uuid,
    unread_only: bool,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<Notification>> {
    let mut query = notifications::table
        .filter(notifications::account_id.eq(account_id))
        .select(Notification::as_select())
        .order(notifications::id.desc())
        .limit(limit)
        .into_boxed();
    if unread_only {
        query = query.filter(notifications::read_at.is_null());
    }
    if let Some(id) = before {
        query = query.filter(notifications::id.lt(id));
    }
    query.load(conn)
}

/// Marks one of the account's notifications read (idempotent); `None` if it has no
/// such notification.
pub fn mark_read(conn: &mut PgConnection, account_id: Uuid, id: Uuid) -> QueryResult<Option<Notification>> {
    let updated = diesel::update(
        notifications::table
            .find(id)
            .filter(notifications::account_id.eq(account_id))
            .filter(notifications::read_at.is_null()),
    )
    .set(notifications::read_at.eq(diesel::dsl::now))
    .returning(Notification::as_returning())
    .get_result(conn)
    .optional()?;
    match updated {
        Some(n) => Ok(Some(n)),
        None => notifications::table
            .find(id)
            .filter(notifications::account_id.eq(account_id))
            .select(Notification::as_select())
            .first(conn)
            .optional(),
    }
}
