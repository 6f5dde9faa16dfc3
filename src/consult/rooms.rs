//! This instance's consultation rooms: one task per room owns the room's state machine
//! (`carewire_signaling::Room`) and carries out its effects.
//!
//! A room handles one input at a time, so the task is the room's lock: connection tasks
//! send it frames through a bounded inbox (which pushes back on a flooding reader), and
//! it answers through one bounded queue per connection. A connection that does not
//! drain its queue is cut off (1013) instead of growing server memory; its participant
//! then gets the grace period like any dropped connection, and its missed messages wait
//! in the room's per-participant outbox for the resume.
//!
//! A room has one owner instance (see [`super::relay`]). A participant connected to
//! another instance is a *remote* connection: its socket stays where it is, its frames
//! travel to the owner and the owner's answers travel back, through the relay.
//!
//! Effects that touch the database (audit records, the appointment moving to arrived
//! or fulfilled) never hold the room up: the room hands them, in order, to its own
//! effects task, which writes them one after another (retrying a failed write), so a
//! slow or locked database delays the records, never the relay or the pongs. A room
//! that closes is forgotten and its lease released at once, but its task ends only
//! after its effects task has written everything (a shutdown waits for it), so
//! `fulfilled` is never lost. Liveness is stamped when a frame reaches the room's inbox, and queued
//! frames are handled before a timer: a participant who kept pinging is never timed out
//! because the room was busy.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use carewire_signaling::{
    Claim, ConnId, GuestLinkKey, IceServer, Identity, Input, Millis, Output, Room, RoomConfig,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::ConsultState;
use super::effects;
use super::relay::{self, Envelope, Relay, WireClaim, WireOrigin};
use crate::context::RequestContext;

/// Frames queued for one connection before it counts as too slow (the room keeps 256
/// events per participant for a resume, so nothing a resume needs is lost by the cut).
pub(crate) const OUTBOUND_QUEUE: usize = 256;
/// Frames queued for one room from all its connections.
const INBOX: usize = 1024;
/// Close code and reason for a relayed connection whose room is no longer where it was.
const MOVED: (u16, &str) = (1012, "room moved; reconnect");

/// What a connection task is told by its room.
#[derive(Debug)]
pub enum Outbound {
    Text(String),
    /// Send a close frame and stop; the room has already forgotten the connection.
    Close {
        code: u16,
        reason: String,
    },
}

/// How the room reaches a connection.
#[derive(Debug)]
pub enum Route {
    /// A socket on this instance.
    Local(mpsc::Sender<Outbound>),
    /// A socket on another instance, through the relay.
    Remote(Uuid),
}

/// What a room task hears.
#[derive(Debug)]
pub enum Command {
    Open {
        conn: ConnId,
        claim: Claim,
        ice_servers: Vec<IceServer>,
        route: Route,
        ctx: RequestContext,
    },
    Frame {
        conn: ConnId,
        text: String,
        /// When the frame reached this instance: the room hears the participant then.
        arrived: Instant,
    },
    Disconnected {
        conn: ConnId,
    },
    /// The server is stopping: close every connection (1001) and end.
    Shutdown,
}

/// What the room needs to know about its appointment, read when it opens.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RoomFacts {
    pub appointment: Uuid,
    pub patient_id: Uuid,
    pub provider_id: Uuid,
}

/// The rooms open on this instance, by appointment, and this instance's connections
/// to rooms other instances own.
#[derive(Debug)]
pub struct Consultations {
    rooms: Mutex<HashMap<Uuid, Registered>>,
    remote: Mutex<HashMap<ConnId, RemoteConn>>,
    next_conn: AtomicU64,
    next_generation: AtomicU64,
    config: RoomConfig,
    relay: Relay,
}

#[derive(Debug)]
struct Registered {
    /// Tells a room apart from a later one for the same appointment.
    generation: u64,
    inbox: mpsc::Sender<Command>,
}

/// A socket here whose room is elsewhere.
#[derive(Debug)]
struct RemoteConn {
    outbound: mpsc::Sender<Outbound>,
    owner: Uuid,
    appointment: Uuid,
}

/// A connection's way into its room.
#[derive(Debug)]
pub enum RoomHandle {
    /// The room is on this instance.
    Local {
        conn: ConnId,
        inbox: mpsc::Sender<Command>,
    },
    /// The room is on instance `owner`.
    Remote {
        conn: ConnId,
        appointment: Uuid,
        owner: Uuid,
        relay: Relay,
    },
}

impl RoomHandle {
    /// Passes a text frame to the room; `false` when the room is gone (or, for a
    /// remote room, the relay is full).
    pub async fn frame(&self, text: String) -> bool {
        match self {
            RoomHandle::Local { conn, inbox } => {
                let arrived = Instant::now();
                inbox
                    .send(Command::Frame {
                        conn: *conn,
                        text,
                        arrived,
                    })
                    .await
                    .is_ok()
            }
            RoomHandle::Remote {
                conn,
                appointment,
                owner,
                relay,
            } => relay.send(
                *owner,
                Envelope::Frame {
                    appointment: *appointment,
                    conn: conn.0,
                    text,
                    reply_to: relay.instance(),
                },
            ),
        }
    }

    /// Whether the room is on another instance.
    pub fn is_remote(&self) -> bool {
        matches!(self, RoomHandle::Remote { .. })
    }

    /// Tells the room the socket is gone; the grace period starts.
    pub async fn disconnected(&self, consultations: &Consultations) {
        match self {
            RoomHandle::Local { conn, inbox } => {
                let _ = inbox.send(Command::Disconnected { conn: *conn }).await;
            }
            RoomHandle::Remote {
                conn,
                appointment,
                owner,
                relay,
            } => {
                consultations.lock_remote().remove(conn);
                relay.send(
                    *owner,
                    Envelope::Disconnected {
                        appointment: *appointment,
                        conn: conn.0,
                    },
                );
            }
        }
    }
}

impl Consultations {
    /// Rooms for this instance, which reaches other instances through `relay`.
    pub fn new(config: RoomConfig, relay: Relay) -> Consultations {
        // Connection ids travel between instances, so they must not collide: the high
        // half is drawn from this instance's id.
        let prefix = relay.instance().as_u64_pair().0 & 0xffff_ffff_0000_0000;
        Consultations {
            rooms: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(prefix | 1),
            next_generation: AtomicU64::new(1),
            config,
            relay,
        }
    }

    /// This instance's id (the owner column of `consult_rooms`).
    pub fn instance(&self) -> Uuid {
        self.relay.instance()
    }

    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// Rooms open on this instance.
    pub fn open_rooms(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Registered>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_remote(&self) -> MutexGuard<'_, HashMap<ConnId, RemoteConn>> {
        self.remote.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn local_inbox(&self, appointment: Uuid) -> Option<mpsc::Sender<Command>> {
        self.lock()
            .get(&appointment)
            .filter(|r| !r.inbox.is_closed())
            .map(|r| r.inbox.clone())
    }

    /// Who owns the appointment's room after trying to take it; `None` when the
    /// database cannot say.
    async fn owner(&self, state: &ConsultState, appointment: Uuid) -> Option<Uuid> {
        let me = self.instance();
        if self.local_inbox(appointment).is_some() {
            return Some(me);
        }
        state
            .db
            .run(move |c| Ok(relay::claim_room(c, appointment, me)?))
            .await
            .ok()
    }

    /// Puts a new connection into the appointment's room: on this instance when it
    /// holds the room or can take it, otherwise relayed to the instance that does. The
    /// room answers through `outbound`.
    pub async fn open(
        &self,
        state: &ConsultState,
        facts: RoomFacts,
        claim: Claim,
        ice_servers: Vec<IceServer>,
        outbound: mpsc::Sender<Outbound>,
        ctx: RequestContext,
    ) -> Option<RoomHandle> {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let owner = self.owner(state, facts.appointment).await?;
        if owner == self.instance() {
            let command = Command::Open {
                conn,
                claim,
                ice_servers,
                route: Route::Local(outbound),
                ctx,
            };
            let inbox = self.enter_local(state, facts, command).await?;
            return Some(RoomHandle::Local { conn, inbox });
        }
        self.lock_remote().insert(
            conn,
            RemoteConn {
                outbound,
                owner,
                appointment: facts.appointment,
            },
        );
        let envelope = Envelope::Open {
            facts,
            conn: conn.0,
            claim: WireClaim::from(&claim),
            ice_servers,
            origin: WireOrigin::from(&ctx),
            reply_to: self.instance(),
        };
        if !self.relay.send(owner, envelope) {
            self.lock_remote().remove(&conn);
            return None;
        }
        Some(RoomHandle::Remote {
            conn,
            appointment: facts.appointment,
            owner,
            relay: self.relay.clone(),
        })
    }

    /// Sends `command` to the room on this instance, opening the room if needed.
    async fn enter_local(
        &self,
        state: &ConsultState,
        facts: RoomFacts,
        mut command: Command,
    ) -> Option<mpsc::Sender<Command>> {
        // A room that just closed may still be registered for an instant; then the
        // send fails and a fresh room is opened. Twice is enough: a new room cannot
        // close before it has read its first command.
        for _ in 0..3 {
            let (generation, inbox) = {
                let mut rooms = self.lock();
                match rooms.get(&facts.appointment) {
                    Some(r) if !r.inbox.is_closed() => (r.generation, r.inbox.clone()),
                    _ => {
                        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                        let (tx, rx) = mpsc::channel(INBOX);
                        rooms.insert(
                            facts.appointment,
                            Registered {
                                generation,
                                inbox: tx.clone(),
                            },
                        );
                        tokio::spawn(run(state.clone(), facts, self.config.clone(), rx, generation));
                        metrics::gauge!("consult_rooms_open").increment(1.0);
                        (generation, tx)
                    }
                }
            };
            match inbox.send(command).await {
                Ok(()) => return Some(inbox),
                Err(mpsc::error::SendError(back)) => {
                    self.forget(facts.appointment, generation);
                    command = back;
                }
            }
        }
        None
    }

    /// Tells a relayed connection at `instance` that its room is not here any more.
    fn moved(&self, instance: Uuid, conn: u64) {
        self.relay.send(
            instance,
            Envelope::Close {
                conn,
                code: MOVED.0,
                reason: MOVED.1.into(),
            },
        );
    }

    /// Handles an envelope another instance relayed to this one.
    pub async fn deliver(&self, state: &ConsultState, envelope: Envelope) {
        match envelope {
            Envelope::Open {
                facts,
                conn,
                claim,
                ice_servers,
                origin,
                reply_to,
            } => {
                let command = Command::Open {
                    conn: ConnId(conn),
                    claim: Claim::from(claim),
                    ice_servers,
                    route: Route::Remote(reply_to),
                    ctx: RequestContext::from(origin),
                };
                let entered = self.owner(state, facts.appointment).await == Some(self.instance())
                    && self.enter_local(state, facts, command).await.is_some();
                if !entered {
                    // The owner changed under the sender: the client reconnects and
                    // lands on the new owner.
                    self.moved(reply_to, conn);
                }
            }
            Envelope::Frame {
                appointment,
                conn,
                text,
                reply_to,
            } => {
                let sent = match self.local_inbox(appointment) {
                    Some(inbox) => inbox
                        .send(Command::Frame {
                            arrived: Instant::now(),
                            conn: ConnId(conn),
                            text,
                        })
                        .await
                        .is_ok(),
                    None => false,
                };
                if !sent {
                    self.moved(reply_to, conn);
                }
            }
            Envelope::Disconnected { appointment, conn } => {
                if let Some(inbox) = self.local_inbox(appointment) {
                    let _ = inbox.send(Command::Disconnected { conn: ConnId(conn) }).await;
                }
            }
            Envelope::Text { conn, text } => {
                let conn = ConnId(conn);
                let mut remote = self.lock_remote();
                let full = remote.get(&conn).is_some_and(|r| {
                    matches!(
                        r.outbound.try_send(Outbound::Text(text)),
                        Err(mpsc::error::TrySendError::Full(_))
                    )
                });
                if full && let Some(r) = remote.remove(&conn) {
                    // Too slow: dropping the sender closes the socket (1013), and the
                    // owner treats it as a dropped connection.
                    metrics::counter!("consult_slow_consumers_total").increment(1);
                    self.relay.send(
                        r.owner,
                        Envelope::Disconnected {
                            appointment: r.appointment,
                            conn: conn.0,
                        },
                    );
                }
            }
            Envelope::Close { conn, code, reason } => {
                if let Some(r) = self.lock_remote().remove(&ConnId(conn)) {
                    let _ = r.outbound.try_send(Outbound::Close { code, reason });
                }
            }
        }
    }

    /// Removes a finished room from the registry, unless a newer one took its place.
    fn forget(&self, appointment: Uuid, generation: u64) {
        let mut rooms = self.lock();
        if rooms
            .get(&appointment)
            .is_some_and(|r| r.generation == generation)
        {
            rooms.remove(&appointment);
        }
    }

    /// Closes every room's connections (1001) for a shutdown.
    pub fn close_all(&self) {
        for room in self.lock().values() {
            let _ = room.inbox.try_send(Command::Shutdown);
        }
    }
}

/// One connection as the room task knows it.
#[derive(Debug)]
struct Conn {
    route: Route,
}

impl Conn {
    /// Hands `outbound` to the connection; `false` when it cannot keep up.
    fn deliver(&self, relay: &Relay, conn: ConnId, outbound: Outbound) -> bool {
        match &self.route {
            Route::Local(tx) => !matches!(tx.try_send(outbound), Err(mpsc::error::TrySendError::Full(_))),
            Route::Remote(instance) => {
                let envelope = match outbound {
                    Outbound::Text(text) => Envelope::Text { conn: conn.0, text },
                    Outbound::Close { code, reason } => Envelope::Close {
                        conn: conn.0,
                        code,
                        reason,
                    },
                };
                relay.send(*instance, envelope)
            }
        }
    }
}

/// A database effect of the room, written by its effects task in the room's order.
#[derive(Debug)]
enum Effect {
    Audit {
        origin: RequestContext,
        record: carewire_signaling::AuditRecord,
    },
    Status(carewire_signaling::RequestedStatus),
}

/// The room's effects, one after another, until the room drops its sender.
async fn carry_out(state: ConsultState, facts: RoomFacts, mut effects_rx: mpsc::UnboundedReceiver<Effect>) {
    while let Some(effect) = effects_rx.recv().await {
        match effect {
            Effect::Audit { origin, record } => effects::audit(&state, &facts, origin, record).await,
            Effect::Status(status) => effects::appointment_status(&state, &facts, status).await,
        }
    }
}

/// The room task: inputs in, effects out, until the room closes.
async fn run(
    state: ConsultState,
    facts: RoomFacts,
    config: RoomConfig,
    mut inbox: mpsc::Receiver<Command>,
    generation: u64,
) {
    let epoch = Instant::now();
    let at = move |instant: Instant| {
        Millis::from_millis(u64::try_from(instant.duration_since(epoch).as_millis()).unwrap_or(u64::MAX))
    };
    let relay = state.rooms.relay.clone();
    let mut key = [0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        tracing::error!("the random number generator failed; consultation room not opened");
        state.rooms.forget(facts.appointment, generation);
        return;
    }
    let mut room = Room::new(
        facts.appointment,
        config,
        GuestLinkKey::from_bytes(key),
        at(Instant::now()),
    );
    let mut conns: HashMap<ConnId, Conn> = HashMap::new();
    // Where each account last connected from, for its audit records.
    let mut origins: HashMap<Uuid, RequestContext> = HashMap::new();
    let mut pending: VecDeque<Input> = VecDeque::new();
    let mut lease = tokio::time::interval_at(Instant::now() + relay::RENEW_EVERY, relay::RENEW_EVERY);
    let mut renewing: Option<tokio::task::JoinHandle<()>> = None;
    // Unbounded: the room must never wait for the database. What can pile up is
    // bounded by what participants do (joins, leaves, the end), a few records each.
    let (effects_tx, effects_rx) = mpsc::unbounded_channel();
    let effects_task = tokio::spawn(carry_out(state.clone(), facts, effects_rx));
    // The room's time never goes back, even for a frame that arrived before the last
    // timer was handled.
    let mut last_now = Millis::from_millis(0);
    tracing::info!(appointment = %facts.appointment, "consultation room opened");

    'room: loop {
        let deadline = room
            .next_deadline()
            .map(|at| epoch + Duration::from_millis(at.as_millis()));
        // Biased: frames already queued are heard before any timer fires.
        let (input, heard_at) = tokio::select! {
            biased;
            command = inbox.recv() => match command {
                None | Some(Command::Shutdown) => {
                    for (id, conn) in &conns {
                        let close = Outbound::Close { code: 1001, reason: "server shutting down".into() };
                        conn.deliver(&relay, *id, close);
                    }
                    break 'room;
                }
                Some(Command::Open { conn, claim, ice_servers, route, ctx }) => {
                    if let Claim::Patient { account } | Claim::Provider { account } = &claim {
                        origins.insert(*account, ctx);
                    }
                    conns.insert(conn, Conn { route });
                    (Input::Open { conn, claim, ice_servers }, Instant::now())
                }
                Some(Command::Frame { conn, text, arrived }) => (Input::Frame { conn, text }, arrived),
                Some(Command::Disconnected { conn }) => {
                    conns.remove(&conn);
                    (Input::Disconnected { conn }, Instant::now())
                }
            },
            () = sleep_until(deadline) => (Input::Tick, Instant::now()),
            _ = lease.tick() => {
                // Off the loop as well; one renewal at a time.
                if renewing.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                    let (state, appointment, me) = (state.clone(), facts.appointment, relay.instance());
                    renewing = Some(tokio::spawn(async move {
                        if let Err(e) = state.db.run(move |c| Ok(relay::renew(c, appointment, me)?)).await {
                            tracing::warn!(error = %e, "renewing a consultation room's lease failed");
                        }
                    }));
                }
                continue 'room;
            }
        };
        last_now = last_now.max(at(heard_at));
        pending.push_back(input);
        while let Some(input) = pending.pop_front() {
            for output in room.handle(last_now, input) {
                match output {
                    Output::Send { conn, frame } => {
                        let Some(c) = conns.get(&conn) else { continue };
                        let text = match frame.to_json() {
                            Ok(text) => text,
                            Err(e) => {
                                tracing::error!(error = %e, "a server frame did not serialize");
                                continue;
                            }
                        };
                        if !c.deliver(&relay, conn, Outbound::Text(text)) {
                            // Too slow: drop the route (a local socket's task closes
                            // it with 1013) and treat it as a dropped connection.
                            conns.remove(&conn);
                            metrics::counter!("consult_slow_consumers_total").increment(1);
                            pending.push_back(Input::Disconnected { conn });
                        }
                    }
                    Output::Close { conn, reason } => {
                        if let Some(c) = conns.remove(&conn) {
                            let close = Outbound::Close {
                                code: reason.ws_code(),
                                reason: reason.as_str().into(),
                            };
                            c.deliver(&relay, conn, close);
                        }
                    }
                    Output::Audit(record) => {
                        let origin = match record.identity {
                            Identity::Account(id) => origins.get(&id).cloned(),
                            Identity::Guest { .. } => None,
                        };
                        let origin = origin.unwrap_or_default();
                        let _ = effects_tx.send(Effect::Audit { origin, record });
                    }
                    Output::AppointmentStatus { status, .. } => {
                        let _ = effects_tx.send(Effect::Status(status));
                    }
                    Output::Closed { reason } => {
                        tracing::info!(appointment = %facts.appointment, reason = ?reason, "consultation room closed");
                        break 'room;
                    }
                }
            }
        }
    }
    state.rooms.forget(facts.appointment, generation);
    let (appointment, me) = (facts.appointment, relay.instance());
    if let Err(e) = state
        .db
        .run(move |c| Ok(relay::release(c, appointment, me)?))
        .await
    {
        tracing::warn!(error = %e, "releasing a consultation room failed; its lease runs out instead");
    }
    // What the room did is written before the task ends (a shutdown waits for it).
    drop(effects_tx);
    if let Err(e) = effects_task.await {
        tracing::error!(error = %e, appointment = %facts.appointment, "a consultation room's effects task failed");
    }
    metrics::gauge!("consult_rooms_open").decrement(1.0);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
