//! The audit tables in PostgreSQL, through diesel on the caller's connection.
//!
//! [`record`] inserts an unsealed row inside whatever transaction the caller holds, so
//! the event commits with the change or read it records, or not at all. [`seal_batch`]
//! gives committed rows their sequence numbers and hashes; the server runs it from one
//! leader at a time.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Text};
use uuid::Uuid;

use crate::chain::{Hash, Head};
use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::encoding::SealedEvent;
use crate::event::{Actor, AuditEvent, Code, Details, Outcome};
use crate::schema::{audit_chain, audit_checkpoints, audit_events};
use crate::verify::Entry;

/// Storage failed, or a stored row cannot be read back as an event (which, for a row
/// only this code writes, means it was altered).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    #[error("audit row {id} cannot be decoded: {what}")]
    Undecodable { id: i64, seq: Option<u64>, what: String },
    /// The chain's head in the database is not the one the sealer left: someone
    /// changed sealed rows. The sealer stops rather than sign over it.
    #[error(
        "the audit chain head moved underneath the sealer (expected entry {} with hash {}…, found entry {} with hash {}…)",
        expected.size, hex::encode(&expected.hash[..8]), found.size, hex::encode(&found.hash[..8])
    )]
    HeadMoved { expected: Head, found: Head },
}

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
struct NewRow<'a> {
    actor_kind: &'a str,
    actor_id: Option<Uuid>,
    actor_role: Option<&'a str>,
    action: &'a str,
    resource_type: &'a str,
    resource_id: Option<Uuid>,
    patient_id: Option<Uuid>,
    outcome: &'a str,
    failure_reason: Option<&'a str>,
    purpose: &'a str,
    request_id: Option<&'a str>,
    client_ip: Option<String>,
    user_agent: Option<&'a str>,
    details: serde_json::Value,
}

/// Records `event` in the caller's transaction. Returns the row id.
pub fn record(conn: &mut PgConnection, event: &AuditEvent) -> QueryResult<i64> {
    diesel::insert_into(audit_events::table)
        .values(&new_row(event))
        .returning(audit_events::id)
        .get_result(conn)
}

/// Records many events in the caller's transaction with one statement (for batch
/// work such as reminders). Returns how many were written.
pub fn record_many(conn: &mut PgConnection, events: &[AuditEvent]) -> QueryResult<usize> {
    // PostgreSQL takes at most 65535 bind parameters per statement; a row has 13.
    let mut written = 0;
    for chunk in events.chunks(4096) {
        let rows: Vec<NewRow<'_>> = chunk.iter().map(new_row).collect();
        written += diesel::insert_into(audit_events::table)
            .values(&rows)
            .execute(conn)?;
    }
    Ok(written)
}

fn new_row(event: &AuditEvent) -> NewRow<'_> {
    let (outcome, failure_reason) = match &event.outcome {
        Outcome::Success => ("success", None),
        Outcome::Failure(reason) => ("failure", Some(reason.as_str())),
    };
    NewRow {
        actor_kind: event.actor.kind(),
        actor_id: event.actor.id(),
        actor_role: event.actor.role().map(Code::as_str),
        action: event.action.as_str(),
        resource_type: event.resource_type.as_str(),
        resource_id: event.resource_id,
        patient_id: event.patient_id,
        outcome,
        failure_reason,
        purpose: event.purpose.as_str(),
        request_id: event.request_id.as_deref(),
        client_ip: event.client_ip.map(|ip| ip.to_string()),
        user_agent: event.user_agent.as_deref(),
        details: serde_json::to_value(&event.details).unwrap_or_default(),
    }
}

/// The columns of an event as stored.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = audit_events)]
pub struct EventRow {
    pub id: i64,
    pub recorded_at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub outcome: String,
    pub failure_reason: Option<String>,
    pub purpose: String,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: serde_json::Value,
}

/// An event's place in the chain.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_chain)]
pub struct ChainRow {
    pub seq: i64,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    pub sealed_at: DateTime<Utc>,
}

/// A stored event and, once sealed, its chain entry.
#[derive(Debug, Clone)]
pub struct Row {
    pub event: EventRow,
    pub chain: Option<ChainRow>,
}

impl Row {
    pub fn id(&self) -> i64 {
        self.event.id
    }

    pub fn seq(&self) -> Option<i64> {
        self.chain.as_ref().map(|c| c.seq)
    }

    fn undecodable(&self, what: impl Into<String>) -> StoreError {
        StoreError::Undecodable {
            id: self.event.id,
            seq: self.seq().and_then(|s| u64::try_from(s).ok()),
            what: what.into(),
        }
    }

    fn code(&self, value: &str, what: &str) -> Result<Code, StoreError> {
        Code::parse(value).map_err(|_| self.undecodable(format!("{what} is not a code")))
    }

    /// The event this row records.
    pub fn event(&self) -> Result<AuditEvent, StoreError> {
        let e = &self.event;
        let actor = match (e.actor_kind.as_str(), e.actor_id, e.actor_role.as_deref()) {
            ("user", Some(id), Some(role)) => Actor::User {
                id,
                role: self.code(role, "actor role")?,
            },
            ("system", None, Some(component)) => Actor::System {
                component: self.code(component, "system component")?,
            },
            ("anonymous", None, None) => Actor::Anonymous,
            _ => return Err(self.undecodable("the actor is inconsistent")),
        };
        let outcome = match (e.outcome.as_str(), e.failure_reason.as_deref()) {
            ("success", None) => Outcome::Success,
            ("failure", Some(reason)) => Outcome::Failure(self.code(reason, "failure reason")?),
            _ => return Err(self.undecodable("the outcome is inconsistent")),
        };
        let client_ip = match &e.client_ip {
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| self.undecodable("client_ip is not an address"))?,
            ),
            None => None,
        };
        let details: Details = serde_json::from_value(e.details.clone())
            .map_err(|_| self.undecodable("details are malformed"))?;
        Ok(AuditEvent {
            actor,
            action: self.code(&e.action, "action")?,
            resource_type: self.code(&e.resource_type, "resource type")?,
            resource_id: e.resource_id,
            patient_id: e.patient_id,
            outcome,
            purpose: self.code(&e.purpose, "purpose")?,
            request_id: e.request_id.clone(),
            client_ip,
            user_agent: e.user_agent.clone(),
            details,
        })
    }

    /// The sealed entry, for verification.
    pub fn entry(&self) -> Result<Entry, StoreError> {
        let chain = self
            .chain
            .as_ref()
            .ok_or_else(|| self.undecodable("not sealed"))?;
        let hash = |bytes: &[u8], what: &str| -> Result<Hash, StoreError> {
            bytes
                .try_into()
                .map_err(|_| self.undecodable(format!("{what} is not 32 bytes")))
        };
        Ok(Entry {
            sealed: SealedEvent {
                seq: u64::try_from(chain.seq).map_err(|_| self.undecodable("seq is negative"))?,
                recorded_at: self.event.recorded_at,
                event: self.event()?,
            },
            prev_hash: hash(&chain.prev_hash, "prev_hash")?,
            hash: hash(&chain.hash, "hash")?,
        })
    }
}

/// The chain's head as the database has it, and the (transaction, id) of the last
/// sealed event: the sealer's watermark.
#[derive(Debug, Clone, QueryableByName)]
struct HeadRow {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Bytea)]
    hash: Vec<u8>,
    #[diesel(sql_type = Text)]
    xid: String,
    #[diesel(sql_type = BigInt)]
    event_id: i64,
}

fn head_row(conn: &mut PgConnection) -> QueryResult<Option<HeadRow>> {
    diesel::sql_query(
        "SELECT c.seq, c.hash, e.xid::text AS xid, e.id AS event_id \
         FROM audit_chain c JOIN audit_events e ON e.id = c.event_id ORDER BY c.seq DESC LIMIT 1",
    )
    .get_result(conn)
    .optional()
}

fn to_head(row: Option<&HeadRow>) -> Head {
    match row {
        Some(row) => Head {
            size: u64::try_from(row.seq).unwrap_or(0),
            hash: row.hash.as_slice().try_into().unwrap_or([0; 32]),
        },
        None => Head::EMPTY,
    }
}

/// The last sealed entry: the chain's head as the database has it.
pub fn head(conn: &mut PgConnection) -> QueryResult<Head> {
    Ok(to_head(head_row(conn)?.as_ref()))
}

/// The result of one sealing pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub count: usize,
    pub head: Head,
    /// Time between the oldest event sealed and its sealing.
    pub oldest_lag: Option<chrono::Duration>,
}

/// Seals up to `limit` committed events, in one transaction: events of transactions
/// older than every transaction still running, in (transaction, id) order after the
/// last sealed one, so no event sealed later can belong before them. Continues from
/// the database's head, which must be `expected` (the head this sealer left) when
/// given.
pub fn seal_batch(conn: &mut PgConnection, limit: i64, expected: Option<Head>) -> Result<Sealed, StoreError> {
    conn.transaction(|conn| {
        let last = head_row(conn)?;
        let mut head = to_head(last.as_ref());
        if let Some(expected) = expected
            && expected != head
        {
            return Err(StoreError::HeadMoved {
                expected,
                found: head,
            });
        }
        let (xid, id) = last
            .map(|l| (l.xid, l.event_id))
            .unwrap_or_else(|| ("0".to_owned(), 0));
        let events: Vec<EventRow> = diesel::sql_query(
            "SELECT id, recorded_at, actor_kind, actor_id, actor_role, action, resource_type, resource_id, \
                    patient_id, outcome, failure_reason, purpose, request_id, client_ip, user_agent, details \
             FROM audit_events \
             WHERE (xid, id) > ($1::xid8, $2) AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY xid, id LIMIT $3",
        )
        .bind::<Text, _>(xid)
        .bind::<BigInt, _>(id)
        .bind::<BigInt, _>(limit)
        .load(conn)?;
        if events.is_empty() {
            return Ok(Sealed {
                count: 0,
                head,
                oldest_lag: None,
            });
        }
        let now = Utc::now();
        let oldest_lag = events.iter().map(|e| now - e.recorded_at).max();
        let mut ids = Vec::with_capacity(events.len());
        let mut seqs = Vec::with_capacity(events.len());
        let mut prevs = Vec::with_capacity(events.len());
        let mut hashes = Vec::with_capacity(events.len());
        for event in events {
            let row = Row { event, chain: None };
            let sealed = SealedEvent {
                seq: head.size + 1,
                recorded_at: row.event.recorded_at,
                event: row.event()?,
            };
            let (prev, hash) = head.append(&sealed);
            ids.push(row.event.id);
            seqs.push(i64::try_from(sealed.seq).unwrap_or(i64::MAX));
            prevs.push(prev.to_vec());
            hashes.push(hash.to_vec());
        }
        let count = ids.len();
        diesel::sql_query(
            "INSERT INTO audit_chain (seq, event_id, prev_hash, hash) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[])",
        )
        .bind::<Array<BigInt>, _>(seqs)
        .bind::<Array<BigInt>, _>(ids)
        .bind::<Array<Bytea>, _>(prevs)
        .bind::<Array<Bytea>, _>(hashes)
        .execute(conn)?;
        Ok(Sealed {
            count,
            head,
            oldest_lag,
        })
    })
}

/// Committed events not sealed yet (past the sealer's watermark).
pub fn unsealed_count(conn: &mut PgConnection) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let (xid, id) = head_row(conn)?
        .map(|l| (l.xid, l.event_id))
        .unwrap_or_else(|| ("0".to_owned(), 0));
    diesel::sql_query("SELECT count(*) AS n FROM audit_events WHERE (xid, id) > ($1::xid8, $2)")
        .bind::<Text, _>(xid)
        .bind::<BigInt, _>(id)
        .get_result::<Count>(conn)
        .map(|c| c.n)
}

/// Up to `limit` sealed entries after `after_seq`, in order.
pub fn sealed_page(conn: &mut PgConnection, after_seq: u64, limit: i64) -> QueryResult<Vec<Row>> {
    let rows: Vec<(ChainRow, EventRow)> = audit_chain::table
        .inner_join(audit_events::table)
        .filter(audit_chain::seq.gt(i64::try_from(after_seq).unwrap_or(i64::MAX)))
        .order(audit_chain::seq.asc())
        .limit(limit)
        .select((ChainRow::as_select(), EventRow::as_select()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(chain, event)| Row {
            event,
            chain: Some(chain),
        })
        .collect())
}

/// The sequence number of the entry whose stored hash is `hash`.
pub fn locate(conn: &mut PgConnection, hash: &Hash) -> QueryResult<Option<u64>> {
    Ok(audit_chain::table
        .filter(audit_chain::hash.eq(hash.as_slice()))
        .select(audit_chain::seq)
        .first::<i64>(conn)
        .optional()?
        .and_then(|s| u64::try_from(s).ok()))
}

/// Stores a checkpoint (once per size).
pub fn store_checkpoint(conn: &mut PgConnection, signed: &SignedCheckpoint) -> QueryResult<usize> {
    diesel::insert_into(audit_checkpoints::table)
        .values((
            audit_checkpoints::size.eq(i64::try_from(signed.checkpoint.size).unwrap_or(i64::MAX)),
            audit_checkpoints::head.eq(signed.checkpoint.head.as_slice()),
            audit_checkpoints::signed_at.eq(signed.checkpoint.at),
            audit_checkpoints::key_id.eq(&signed.key_id),
            audit_checkpoints::signature.eq(signed.signature.as_slice()),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_checkpoints)]
struct CheckpointRow {
    size: i64,
    head: Vec<u8>,
    signed_at: DateTime<Utc>,
    key_id: String,
    signature: Vec<u8>,
}

/// Every checkpoint in the database, oldest first. A row that does not parse is
/// returned with a zeroed signature, which then fails verification (as it should).
pub fn checkpoints(conn: &mut PgConnection) -> QueryResult<Vec<SignedCheckpoint>> {
    let rows: Vec<CheckpointRow> = audit_checkpoints::table
        .order(audit_checkpoints::size.asc())
        .select(CheckpointRow::as_select())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|row| SignedCheckpoint {
            checkpoint: Checkpoint {
                size: u64::try_from(row.size).unwrap_or(0),
                head: row.head.as_slice().try_into().unwrap_or([0; 32]),
                at: row.signed_at,
            },
            key_id: row.key_id,
            signature: row.signature.as_slice().try_into().unwrap_or([0; 64]),
        })
        .collect())
}

/// The newest checkpoint in the database.
pub fn latest_checkpoint(conn: &mut PgConnection) -> QueryResult<Option<u64>> {
    audit_checkpoints::table
        .select(diesel::dsl::max(audit_checkpoints::size))
        .first::<Option<i64>>(conn)
        .map(|size| size.and_then(|s| u64::try_from(s).ok()))
}

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub patient_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub action: Option<Code>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only rows older than this row id (the cursor of the previous page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

fn with_chain(rows: Vec<(EventRow, Option<ChainRow>)>) -> Vec<Row> {
    rows.into_iter()
        .map(|(event, chain)| Row { event, chain })
        .collect()
}

/// Matching rows, newest first.
pub fn search(conn: &mut PgConnection, search: &Search) -> QueryResult<Vec<Row>> {
    let mut query = audit_events::table
        .left_join(audit_chain::table)
        .select((EventRow::as_select(), Option::<ChainRow>::as_select()))
        .into_boxed();
    if let Some(patient) = search.patient_id {
        query = query.filter(audit_events::patient_id.eq(patient));
    }
    if let Some(actor) = search.actor_id {
        query = query.filter(audit_events::actor_id.eq(actor));
    }
    if let Some(action) = &search.action {
        query = query.filter(audit_events::action.eq(action.as_str().to_owned()));
    }
    if let Some(since) = search.since {
        query = query.filter(audit_events::recorded_at.ge(since));
    }
    if let Some(until) = search.until {
        query = query.filter(audit_events::recorded_at.lt(until));
    }
    if let Some(before) = search.before_id {
        query = query.filter(audit_events::id.lt(before));
    }
    Ok(with_chain(
        query
            .order(audit_events::id.desc())
            .limit(search.limit)
            .load(conn)?,
    ))
}

/// Rows recorded in [since, until), oldest first, after row id `after_id`.
pub fn export_page(
    conn: &mut PgConnection,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    after_id: i64,
    limit: i64,
) -> QueryResult<Vec<Row>> {
    let mut query = audit_events::table
        .left_join(audit_chain::table)
        .select((EventRow::as_select(), Option::<ChainRow>::as_select()))
        .filter(audit_events::id.gt(after_id))
        .into_boxed();
    if let Some(since) = since {
        query = query.filter(audit_events::recorded_at.ge(since));
    }
    if let Some(until) = until {
        query = query.filter(audit_events::recorded_at.lt(until));
    }
    Ok(with_chain(
        query.order(audit_events::id.asc()).limit(limit).load(conn)?,
    ))
}
