//! Consultation rooms across instances.
//!
//! A room lives in the memory of one instance, its owner, recorded in `consult_rooms`
//! under a lease the owner renews while the room is open. A participant who reaches
//! another instance is relayed: that instance keeps the socket and passes the frames to
//! the owner, and the owner's answers back, through PostgreSQL. Each [`Envelope`] is a
//! row in the unlogged `consult_relay` table; `NOTIFY carewire_consult` carries only the
//! receiving instance's id, and the receiver deletes its rows as it reads them, in id
//! order (one writer task per instance keeps each sender's frames in order). So two
//! instances behind a load balancer with no sticky routing still hold one room.
//!
//! If the owner dies, its lease runs out (`LEASE`), and the next participant to connect
//! anywhere opens the room afresh: clients see `resumed: false` and renegotiate, as
//! after any lost room.

use std::collections::BTreeSet;
use std::time::Duration;

use diesel::Connection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use carewire_signaling::{Claim, IceServer};

use super::ConsultState;
use super::rooms::RoomFacts;
use crate::context::RequestContext;
use crate::db::Db;
use crate::schema::{consult_relay, consult_rooms};

/// How long an owner's claim on a room holds without renewal.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often an owner renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Envelopes waiting to be written before senders are told the relay is full.
const QUEUE: usize = 8192;
/// Envelopes written per transaction.
const BATCH: usize = 256;
/// How often an instance looks for envelopes even without a notification (one lost
/// while its listener reconnected, say).
const POLL: Duration = Duration::from_secs(1);

/// A seat claim as it travels between instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "seat", rename_all = "snake_case")]
pub enum WireClaim {
    Patient { account: Uuid },
    Provider { account: Uuid },
    Guest { token: String },
}

impl From<&Claim> for WireClaim {
    fn from(claim: &Claim) -> WireClaim {
        match claim {
            Claim::Patient { account } => WireClaim::Patient { account: *account },
            Claim::Provider { account } => WireClaim::Provider { account: *account },
            Claim::Guest { token } => WireClaim::Guest { token: token.clone() },
        }
    }
}

impl From<WireClaim> for Claim {
    fn from(claim: WireClaim) -> Claim {
        match claim {
            WireClaim::Patient { account } => Claim::Patient { account },
            WireClaim::Provider { account } => Claim::Provider { account },
            WireClaim::Guest { token } => Claim::Guest { token },
        }
    }
}

/// Where a connection came from, for the owner's audit records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireOrigin {
    pub request_id: String,
    pub client_ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

impl From<&RequestContext> for WireOrigin {
    fn from(ctx: &RequestContext) -> WireOrigin {
        WireOrigin {
            request_id: ctx.request_id.clone(),
            client_ip: ctx.client_ip,
            user_agent: ctx.user_agent.clone(),
        }
    }
}

impl From<WireOrigin> for RequestContext {
    fn from(o: WireOrigin) -> RequestContext {
        RequestContext {
            request_id: o.request_id,
            client_ip: o.client_ip,
            user_agent: o.user_agent,
        }
    }
}

/// One message between instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Envelope {
    /// To the owner: a participant connected at `reply_to`.
    Open {
        facts: RoomFacts,
        conn: u64,
        claim: WireClaim,
        ice_servers: Vec<IceServer>,
        origin: WireOrigin,
        reply_to: Uuid,
    },
    /// To the owner: a text frame from a relayed participant.
    Frame {
        appointment: Uuid,
        conn: u64,
        text: String,
        reply_to: Uuid,
    },
    /// To the owner: the relayed participant's socket is gone.
    Disconnected { appointment: Uuid, conn: u64 },
    /// To the connection's instance: write this frame.
    Text { conn: u64, text: String },
    /// To the connection's instance: close the socket.
    Close { conn: u64, code: u16, reason: String },
}

/// The sending side: queues envelopes for the writer task.
#[derive(Debug, Clone)]
pub struct Relay {
    instance: Uuid,
    queue: mpsc::Sender<(Uuid, Envelope)>,
}

impl Relay {
    /// A relay for this instance, and the queue its writer task drains.
    pub fn new(instance: Uuid) -> (Relay, mpsc::Receiver<(Uuid, Envelope)>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        (Relay { instance, queue }, rx)
    }

    /// This instance's id.
    pub fn instance(&self) -> Uuid {
        self.instance
    }

    /// Queues `envelope` for instance `to`; `false` when the queue is full (the
    /// message is dropped, and counted: the room's outbox still has it for a resume).
    pub fn send(&self, to: Uuid, envelope: Envelope) -> bool {
        let sent = self.queue.try_send((to, envelope)).is_ok();
        if !sent {
            metrics::counter!("consult_relay_dropped_total").increment(1);
        }
        sent
    }
}

#[derive(QueryableByName)]
struct Owner {
    #[diesel(sql_type = SqlUuid)]
    instance_id: Uuid,
}

/// Who owns the appointment's room after trying to take it: this instance when the
/// room is unowned, already ours, or its owner's lease ran out.
pub fn claim_room(conn: &mut PgConnection, appointment: Uuid, me: Uuid) -> QueryResult<Uuid> {
    let lease_ms = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
    let taken: Option<Owner> = diesel::sql_query(
        "INSERT INTO consult_rooms (appointment_id, instance_id, lease_until) \
         VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
         ON CONFLICT (appointment_id) DO UPDATE \
           SET instance_id = EXCLUDED.instance_id, lease_until = EXCLUDED.lease_until \
           WHERE consult_rooms.instance_id = EXCLUDED.instance_id OR consult_rooms.lease_until < now() \
         RETURNING instance_id",
    )
    .bind::<SqlUuid, _>(appointment)
    .bind::<SqlUuid, _>(me)
    .bind::<BigInt, _>(lease_ms)
    .get_result(conn)
    .optional()?;
    match taken {
        Some(owner) => Ok(owner.instance_id),
        None => consult_rooms::table
            .find(appointment)
            .select(consult_rooms::instance_id)
            .first(conn),
    }
}

/// Extends this instance's lease on a room it holds.
pub fn renew(conn: &mut PgConnection, appointment: Uuid, me: Uuid) -> QueryResult<usize> {
    let lease_ms = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
    diesel::sql_query(
        "UPDATE consult_rooms SET lease_until = now() + $3 * interval '1 millisecond' \
         WHERE appointment_id = $1 AND instance_id = $2",
    )
    .bind::<SqlUuid, _>(appointment)
    .bind::<SqlUuid, _>(me)
    .bind::<BigInt, _>(lease_ms)
    .execute(conn)
}

/// Gives up this instance's claim on a closed room.
pub fn release(conn: &mut PgConnection, appointment: Uuid, me: Uuid) -> QueryResult<usize> {
    diesel::delete(
        consult_rooms::table
            .filter(consult_rooms::appointment_id.eq(appointment))
            .filter(consult_rooms::instance_id.eq(me)),
    )
    .execute(conn)
}

/// Writes queued envelopes, a batch per transaction, and wakes their receivers.
pub async fn write_queued(db: Db, mut queue: mpsc::Receiver<(Uuid, Envelope)>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let rows: Vec<(Uuid, String)> = batch
            .into_iter()
            .filter_map(|(to, envelope)| serde_json::to_string(&envelope).ok().map(|body| (to, body)))
            .collect();
        let written = db
            .run(move |conn| {
                conn.transaction(|conn| {
                    let targets: BTreeSet<Uuid> = rows.iter().map(|(to, _)| *to).collect();
                    let values: Vec<_> = rows
                        .iter()
                        .map(|(to, body)| {
                            (
                                consult_relay::instance_id.eq(*to),
                                consult_relay::body.eq(body.as_str()),
                            )
                        })
                        .collect();
                    diesel::insert_into(consult_relay::table)
                        .values(&values)
                        .execute(conn)?;
                    for target in targets {
                        diesel::sql_query("SELECT pg_notify('carewire_consult', $1)")
                            .bind::<Text, _>(target.to_string())
                            .execute(conn)?;
                    }
                    Ok(())
                })
            })
            .await;
        if let Err(e) = written {
            metrics::counter!("consult_relay_write_failures_total").increment(1);
            tracing::warn!(error = %e, "relaying consultation frames failed");
        }
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    body: String,
}

/// Takes what other instances sent this one, in the order it was written.
fn take(conn: &mut PgConnection, me: Uuid) -> QueryResult<Vec<Envelope>> {
    let mut rows: Vec<Row> =
        diesel::sql_query("DELETE FROM consult_relay WHERE instance_id = $1 RETURNING id, body")
            .bind::<SqlUuid, _>(me)
            .load(conn)?;
    rows.sort_by_key(|r| r.id);
    Ok(rows
        .into_iter()
        .filter_map(|r| match serde_json::from_str(&r.body) {
            Ok(envelope) => Some(envelope),
            Err(e) => {
                tracing::warn!(error = %e, "an unreadable relayed consultation frame was dropped");
                None
            }
        })
        .collect())
}

/// Delivers what other instances sent this one: on each wakeup from the bus, and at
/// least every second.
pub async fn receive(state: ConsultState, mut wakeups: watch::Receiver<u64>) {
    let me = state.rooms.instance();
    loop {
        tokio::select! {
            changed = wakeups.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(POLL) => {}
        }
        match state.db.run(move |conn| Ok(take(conn, me)?)).await {
            Ok(envelopes) => {
                for envelope in envelopes {
                    state.rooms.deliver(&state, envelope).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading relayed consultation frames failed"),
        }
    }
}
