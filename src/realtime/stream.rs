//! The event stream as stored: the `events` outbox, numbered by the sequencer.
//!
//! `seq` is assigned by the `sequence_events` SQL function (see the realtime
//! migration) in commit-safe order, one sequencer at a time, without gaps. A client's
//! position is the last `seq` it received; everything after it is either still in
//! the table or was pruned (then it must resync).

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use uuid::Uuid;

use crate::schema::{event_stream, events};

/// A sequenced event.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub seq: i64,
    pub kind: String,
    pub provider_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub appointment_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

type Row = (
    i64,
    String,
    Option<Uuid>,
    Option<Uuid>,
    Option<Uuid>,
    Option<Uuid>,
    serde_json::Value,
    DateTime<Utc>,
);

fn from_row(row: Row) -> StreamEvent {
    let (seq, kind, provider_id, patient_id, appointment_id, account_id, payload, created_at) = row;
    StreamEvent {
        seq,
        kind,
        provider_id,
        patient_id,
        appointment_id,
        account_id,
        payload,
        created_at,
    }
}

macro_rules! columns {
    () => {
        (
            events::seq.assume_not_null(),
            events::kind,
            events::provider_id,
            events::patient_id,
            events::appointment_id,
            events::account_id,
            events::payload,
            events::created_at,
        )
    };
}

/// Sequenced events after `after`, in order.
pub fn after(conn: &mut PgConnection, after: i64, limit: i64) -> QueryResult<Vec<StreamEvent>> {
    let rows: Vec<Row> = events::table
        .filter(events::seq.gt(after))
        .order(events::seq.asc())
        .limit(limit)
        .select(columns!())
        .load(conn)?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Whose events a connection may replay: its account, its patient record, and the
/// providers whose topics it follows.
#[derive(Debug, Clone, Default)]
pub struct Audience {
    pub account_id: Uuid,
    pub patient_id: Option<Uuid>,
    pub providers: Vec<Uuid>,
}

/// Sequenced events in `(after, through]` that may concern `audience`, in order (the
/// caller routes each precisely).
pub fn replay(
    conn: &mut PgConnection,
    audience: &Audience,
    after: i64,
    through: i64,
    limit: i64,
) -> QueryResult<Vec<StreamEvent>> {
    let mut providers = audience.providers.clone();
    // A provider's own appointments are theirs under their account id.
    providers.push(audience.account_id);
    let rows: Vec<Row> = events::table
        .filter(events::seq.gt(after))
        .filter(events::seq.le(through))
        .filter(
            events::account_id
                .eq(audience.account_id)
                .or(events::provider_id.eq_any(providers))
                .or(events::patient_id.eq(audience.patient_id.unwrap_or(Uuid::nil()))),
        )
        .order(events::seq.asc())
        .limit(limit)
        .select(columns!())
        .load(conn)?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// The stream's head: the last `seq` handed out, and the last one pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable)]
pub struct Head {
    pub last_seq: i64,
    pub pruned_through: i64,
}

pub fn head(conn: &mut PgConnection) -> QueryResult<Head> {
    event_stream::table
        .select((event_stream::last_seq, event_stream::pruned_through))
        .first(conn)
}

#[derive(QueryableByName)]
struct Sequenced {
    #[diesel(sql_type = BigInt)]
    last: i64,
}

/// Numbers up to `batch` committed events; returns the last `seq` given out.
pub fn sequence(conn: &mut PgConnection, batch: i32) -> QueryResult<i64> {
    diesel::sql_query("SELECT sequence_events($1) AS last")
        .bind::<Integer, _>(batch)
        .get_result::<Sequenced>(conn)
        .map(|s| s.last)
}

/// Whether events wait for a number: the sequencer's cheap check before it takes the
/// stream's row lock (a read of the partial index on unsequenced events).
pub fn waiting(conn: &mut PgConnection) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(events::table.filter(events::seq.is_null()))).get_result(conn)
}

/// Deletes sequenced events created before `cutoff` (oldest first, whole `seq`
/// prefix only, so "everything after `pruned_through` is still here" stays true).
/// Returns how many went.
pub fn prune(conn: &mut PgConnection, cutoff: DateTime<Utc>) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let through: Option<i64> = events::table
            .filter(events::seq.is_not_null())
            .filter(events::created_at.lt(cutoff))
            .select(diesel::dsl::max(events::seq))
            .first(conn)?;
        let Some(through) = through else {
            return Ok(0);
        };
        let gone = diesel::delete(events::table.filter(events::seq.le(through))).execute(conn)?;
        diesel::update(event_stream::table)
            .filter(event_stream::pruned_through.lt(through))
            .set(event_stream::pruned_through.eq(through))
            .execute(conn)?;
        Ok(gone)
    })
}
