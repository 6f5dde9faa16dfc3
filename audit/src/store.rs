//! The audit tables in PostgreSQL, through diesel on the caller's connection.
//!
//! [`record`] inserts an unsealed row inside whatever transaction the caller holds, so
//! the event commits with the change or read it records, or not at all. [`seal_batch`]
//! gives committed rows their sequence numbers and hashes; the server runs it from one
//! leader at a time.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::pg::data_types::PgTimestamp;
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
    /// A chain entry whose event row is gone.
    #[error("the event of audit chain entry {seq} is gone")]
    EventMissing { seq: i64 },
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
        self.entry_at(chain.seq, &chain.prev_hash, &chain.hash)
    }

    fn entry_at(&self, seq: i64, prev_hash: &[u8], hash: &[u8]) -> Result<Entry, StoreError> {
        let hash32 = |bytes: &[u8], what: &str| -> Result<Hash, StoreError> {
            bytes
                .try_into()
                .map_err(|_| self.undecodable(format!("{what} is not 32 bytes")))
        };
        Ok(Entry {
            sealed: SealedEvent {
                seq: u64::try_from(seq).map_err(|_| self.undecodable("seq is negative"))?,
                recorded_at: self.event.recorded_at,
                event: self.event()?,
            },
            prev_hash: hash32(prev_hash, "prev_hash")?,
            hash: hash32(hash, "hash")?,
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

/// The largest sequence number in the chain, whatever became of its event: how far
/// verification reads (an entry whose event row is gone is still an entry to report).
pub fn last_seq(conn: &mut PgConnection) -> QueryResult<u64> {
    let max: Option<i64> = audit_chain::table
        .select(diesel::dsl::max(audit_chain::seq))
        .first(conn)?;
    Ok(max.and_then(|m| u64::try_from(m).ok()).unwrap_or(0))
}

/// The result of one sealing pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub count: usize,
    pub head: Head,
    /// Time between the oldest event sealed and its sealing.
    pub oldest_lag: Option<chrono::Duration>,
}

/// The transaction id below which every transaction that could write to this
/// database has ended, as text: the oldest transaction still running *here*, or,
/// when none is, the next one to start.
///
/// `pg_snapshot_xmin` would be simpler but is cluster-wide: a session left idle in a
/// transaction in another database of the same server would stop sealing for as long
/// as it stays open. So the snapshot's running transactions are taken first and then
/// those known to run in another database (through their own transaction lock and
/// their backend's database) are left out. Taking the snapshot first matters: a
/// transaction that started after it has a higher id than any it lists, and one that
/// cannot be placed (just starting, or prepared) is counted as running here, which
/// only delays sealing. `pg_locks`, and the database of each backend, are visible
/// without extra privileges.
const SEALING_HORIZON: &str = "\
    WITH snapshot AS MATERIALIZED (SELECT pg_current_snapshot() AS snap), \
         elsewhere AS MATERIALIZED ( \
             SELECT l.transactionid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'transactionid' AND l.granted \
               AND a.datid IS DISTINCT FROM (SELECT oid FROM pg_database WHERE datname = current_database())) \
    SELECT coalesce( \
        (SELECT min(x) FROM snapshot, pg_snapshot_xip(snapshot.snap) AS x \
         WHERE NOT EXISTS (SELECT 1 FROM elsewhere e WHERE e.transactionid = x::xid)), \
        (SELECT pg_snapshot_xmax(snap) FROM snapshot))::text AS horizon";

/// Seals up to `limit` committed events, in one transaction: events of transactions
/// older than every transaction still running in this database (see
/// [`SEALING_HORIZON`]), in (transaction, id) order after the last sealed one, so no
/// event sealed later can belong before them. Continues from the database's head,
/// which must be `expected` (the head this sealer left) when given.
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
        #[derive(QueryableByName)]
        struct Horizon {
            #[diesel(sql_type = Text)]
            horizon: String,
        }
        // A statement of its own: the rows are read with a later snapshot, which sees
        // every transaction below the horizon as ended.
        let horizon = diesel::sql_query(SEALING_HORIZON)
            .get_result::<Horizon>(conn)?
            .horizon;
        let events: Vec<EventRow> = diesel::sql_query(
            "SELECT id, recorded_at, actor_kind, actor_id, actor_role, action, resource_type, resource_id, \
                    patient_id, outcome, failure_reason, purpose, request_id, client_ip, user_agent, details \
             FROM audit_events \
             WHERE (xid, id) > ($1::xid8, $2) AND xid < $4::xid8 \
             ORDER BY xid, id LIMIT $3",
        )
        .bind::<Text, _>(xid)
        .bind::<BigInt, _>(id)
        .bind::<BigInt, _>(limit)
        .bind::<Text, _>(horizon)
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

/// Sessions of this database whose open transactions keep committed events from being
/// sealed (transactions still running that are older than the newest unsealed
/// event's): one line each, with the backend's pid, role and application, and, where
/// the caller's role may see it, the session's state and how long the transaction has
/// been open, for an operator to act on. Transaction locks (`pg_locks`) are visible
/// to every role, so a runtime role that owns nothing still names every session.
pub fn holding_back(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct Session {
        #[diesel(sql_type = Text)]
        line: String,
    }
    let (xid, id) = head_row(conn)?
        .map(|l| (l.xid, l.event_id))
        .unwrap_or_else(|| ("0".to_owned(), 0));
    Ok(diesel::sql_query(
        "SELECT format('pid %s (role %s, application %L, %s)', l.pid, a.usename, a.application_name, \
                       CASE WHEN a.state IS NULL OR a.xact_start IS NULL THEN 'state not visible to this role' \
                            ELSE format('%s, transaction open for %s s', a.state, \
                                        round(extract(epoch FROM now() - a.xact_start))::bigint) END) AS line \
         FROM pg_snapshot_xip(pg_current_snapshot()) AS x \
         JOIN pg_locks l ON l.locktype = 'transactionid' AND l.granted AND l.transactionid = x::xid \
         JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND l.pid <> pg_backend_pid() \
           AND x < (SELECT max(xid) FROM audit_events WHERE (xid, id) > ($1::xid8, $2)) \
         ORDER BY x",
    )
    .bind::<Text, _>(xid)
    .bind::<BigInt, _>(id)
    .load::<Session>(conn)?
    .into_iter()
    .map(|s| s.line)
    .collect())
}

/// A chain entry as stored, read for verification: every column nullable and the
/// time as PostgreSQL's raw microseconds, so that whatever someone wrote into the
/// tables (`NULL` where the schema forbids it after an `ALTER`, `'infinity'`, a time
/// outside chrono's range) reads back and becomes a finding at its entry, never an
/// error that stops verification.
#[derive(Debug, Clone, Queryable)]
pub struct StoredEntry {
    pub seq: i64,
    prev_hash: Option<Vec<u8>>,
    hash: Option<Vec<u8>>,
    event_id: Option<i64>,
    recorded_at: Option<PgTimestamp>,
    actor_kind: Option<String>,
    actor_id: Option<Uuid>,
    actor_role: Option<String>,
    action: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<Uuid>,
    patient_id: Option<Uuid>,
    outcome: Option<String>,
    failure_reason: Option<String>,
    purpose: Option<String>,
    request_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
    details: Option<serde_json::Value>,
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A PostgreSQL timestamp as a time, unless it is infinite or out of range.
fn finite_time(raw: PgTimestamp) -> Option<DateTime<Utc>> {
    if raw.0 == i64::MAX || raw.0 == i64::MIN {
        return None;
    }
    DateTime::from_timestamp_micros(raw.0.checked_add(PG_EPOCH_UNIX_MICROS)?)
}

impl StoredEntry {
    /// The entry, or why its stored row is not one the sealer could have written:
    /// [`StoreError::EventMissing`] when the event row is gone, else
    /// [`StoreError::Undecodable`].
    pub fn entry(self) -> Result<Entry, StoreError> {
        let seq = u64::try_from(self.seq).ok();
        let Some(id) = self.event_id else {
            return Err(StoreError::EventMissing { seq: self.seq });
        };
        let undecodable = |what: &str| StoreError::Undecodable {
            id,
            seq,
            what: what.to_owned(),
        };
        let required =
            |value: Option<String>, what: &str| value.ok_or_else(|| undecodable(&format!("{what} is NULL")));
        let recorded_at = self
            .recorded_at
            .ok_or_else(|| undecodable("recorded_at is NULL"))
            .and_then(|t| finite_time(t).ok_or_else(|| undecodable("recorded_at is not a finite time")))?;
        let event = EventRow {
            id,
            recorded_at,
            actor_kind: required(self.actor_kind, "actor_kind")?,
            actor_id: self.actor_id,
            actor_role: self.actor_role,
            action: required(self.action, "action")?,
            resource_type: required(self.resource_type, "resource_type")?,
            resource_id: self.resource_id,
            patient_id: self.patient_id,
            outcome: required(self.outcome, "outcome")?,
            failure_reason: self.failure_reason,
            purpose: required(self.purpose, "purpose")?,
            request_id: self.request_id,
            client_ip: self.client_ip,
            user_agent: self.user_agent,
            details: self.details.ok_or_else(|| undecodable("details is NULL"))?,
        };
        let prev_hash = self.prev_hash.ok_or_else(|| undecodable("prev_hash is NULL"))?;
        let hash = self.hash.ok_or_else(|| undecodable("hash is NULL"))?;
        Row { event, chain: None }
            .entry_at(self.seq, &prev_hash, &hash)
            .map_err(|e| match e {
                StoreError::Undecodable { id, what, .. } => StoreError::Undecodable { id, seq, what },
                e => e,
            })
    }
}

/// Up to `limit` chain entries after `after_seq` (and up to `through`, when given), in
/// order, with their events as stored (see [`StoredEntry`]).
pub fn sealed_page(
    conn: &mut PgConnection,
    after_seq: u64,
    through: Option<u64>,
    limit: i64,
) -> QueryResult<Vec<StoredEntry>> {
    let bound = |seq: u64| i64::try_from(seq).unwrap_or(i64::MAX);
    audit_chain::table
        .left_join(audit_events::table)
        .filter(audit_chain::seq.gt(bound(after_seq)))
        .filter(audit_chain::seq.le(through.map_or(i64::MAX, bound)))
        .order(audit_chain::seq.asc())
        .limit(limit)
        .select((
            audit_chain::seq,
            audit_chain::prev_hash.nullable(),
            audit_chain::hash.nullable(),
            audit_events::id.nullable(),
            audit_events::recorded_at.nullable(),
            audit_events::actor_kind.nullable(),
            audit_events::actor_id.nullable(),
            audit_events::actor_role.nullable(),
            audit_events::action.nullable(),
            audit_events::resource_type.nullable(),
            audit_events::resource_id.nullable(),
            audit_events::patient_id.nullable(),
            audit_events::outcome.nullable(),
            audit_events::failure_reason.nullable(),
            audit_events::purpose.nullable(),
            audit_events::request_id.nullable(),
            audit_events::client_ip.nullable(),
            audit_events::user_agent.nullable(),
            audit_events::details.nullable(),
        ))
        .load(conn)
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

/// A stored checkpoint, every column as it is (see [`StoredEntry`]).
#[derive(Queryable)]
struct CheckpointRow {
    size: i64,
    head: Option<Vec<u8>>,
    signed_at: Option<PgTimestamp>,
    key_id: Option<String>,
    signature: Option<Vec<u8>>,
}

/// Every checkpoint in the database, oldest first. A row that does not parse (a
/// wrong length, a NULL, an infinite time) is returned with a zeroed signature, which
/// then fails verification, as it should.
pub fn checkpoints(conn: &mut PgConnection) -> QueryResult<Vec<SignedCheckpoint>> {
    let rows: Vec<CheckpointRow> = audit_checkpoints::table
        .order(audit_checkpoints::size.asc())
        .select((
            audit_checkpoints::size,
            audit_checkpoints::head.nullable(),
            audit_checkpoints::signed_at.nullable(),
            audit_checkpoints::key_id.nullable(),
            audit_checkpoints::signature.nullable(),
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let head: Option<Hash> = row.head.as_deref().and_then(|h| h.try_into().ok());
            let at = row.signed_at.and_then(finite_time);
            let signature: Option<[u8; 64]> = row.signature.as_deref().and_then(|s| s.try_into().ok());
            let broken = head.is_none() || at.is_none();
            SignedCheckpoint {
                checkpoint: Checkpoint {
                    size: u64::try_from(row.size).unwrap_or(0),
                    head: head.unwrap_or([0; 32]),
                    at: at.unwrap_or_default(),
                },
                key_id: row.key_id.unwrap_or_default(),
                signature: signature.filter(|_| !broken).unwrap_or([0; 64]),
            }
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
