//! Notifications: what a user is told (today, appointment reminders), kept until they
//! read it, and handed to every delivery channel in the transaction that creates it.
//!
//! - [`channels`]: the delivery channels behind one trait: the WebSocket (through the
//!   events outbox) and a signed webhook.
//! - [`webhook`]: the webhook worker: signing, sending, retries with backoff.
//! - [`routes`]: `GET /v1/me/notifications`, `POST /v1/me/notifications/{id}/read`.
//!
//! Payloads carry ids, times and codes, never PHI: a reminder names the appointment,
//! not the patient or the reason for visit. But an appointment's time and provider
//! are about its patient, so listing such notifications (over REST, and the unread
//! batch a new WebSocket gets) and marking them read (either way) are audited against
//! that patient in the same transaction ([`disclose`]); a reminder pushed live is
//! audited by the dispatcher that sends it.

pub mod channels;
pub mod routes;
pub mod webhook;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, Code, DetailValue, action};
use crate::context::{Caller, RequestContext};
use crate::error::Error;
use crate::schema::notifications;

/// The resource code of notifications in the audit log.
const NOTIFICATION: Code = Code::new("notification");

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

/// The patients whose appointments `items` name, each with how many of the items
/// name them: what showing the items discloses, for the audit log.
pub fn patients_named(conn: &mut PgConnection, items: &[Notification]) -> QueryResult<Vec<(Uuid, i64)>> {
    use crate::schema::appointments;
    let ids: Vec<Uuid> = items.iter().filter_map(|n| n.appointment_id).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let patient_of: std::collections::HashMap<Uuid, Uuid> = appointments::table
        .filter(appointments::id.eq_any(&ids))
        .select((appointments::id, appointments::patient_id))
        .load::<(Uuid, Uuid)>(conn)?
        .into_iter()
        .collect();
    let mut named: std::collections::BTreeMap<Uuid, i64> = std::collections::BTreeMap::new();
    for id in &ids {
        if let Some(patient) = patient_of.get(id) {
            *named.entry(*patient).or_default() += 1;
        }
    }
    Ok(named.into_iter().collect())
}

/// Records, in the caller's transaction, that `items` were shown to (`verb` read) or
/// changed by (`verb` update) the caller: one event per patient whose appointments
/// they name, with how many. Items naming no appointment disclose nothing.
pub fn disclose(
    conn: &mut PgConnection,
    ctx: &RequestContext,
    caller: &Caller,
    verb: Code,
    items: &[Notification],
) -> Result<(), Error> {
    let events: Vec<_> = patients_named(conn, items)?
        .into_iter()
        .map(|(patient, count)| {
            let event = audit::event(
                ctx,
                audit::actor(caller),
                verb.clone(),
                NOTIFICATION,
                audit::purpose_of(caller.role),
            )
            .patient(patient)
            .detail(Code::new("notifications"), DetailValue::Count(count));
            match items {
                [one] => event.resource(one.id),
                _ => event,
            }
        })
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    audit::record_many(conn, &events)
}

/// Marks one of the caller's notifications read, audited; `None` if they have no
/// such notification.
pub fn read_one(
    conn: &mut PgConnection,
    ctx: &RequestContext,
    caller: &Caller,
    id: Uuid,
) -> Result<Option<Notification>, Error> {
    conn.transaction(|conn| {
        let Some(read) = mark_read(conn, caller.account_id, id)? else {
            return Ok(None);
        };
        disclose(conn, ctx, caller, action::UPDATE, std::slice::from_ref(&read))?;
        Ok(Some(read))
    })
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
