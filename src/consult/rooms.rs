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
//! Effects that touch the database (audit records, the appointment moving to arrived
//! or fulfilled) are awaited in order inside the task: an audit record is written
//! before the room moves on, and `fulfilled` is stored before the room is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use carewire_signaling::{
    Claim, ConnId, GuestLinkKey, IceServer, Identity, Input, Millis, Output, Room, RoomConfig,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::effects;
use crate::http::RequestContext;
use crate::state::AppState;

/// Frames queued for one connection before it counts as too slow (the room keeps 256
/// events per participant for a resume, so nothing a resume needs is lost by the cut).
pub(crate) const OUTBOUND_QUEUE: usize = 256;
/// Frames queued for one room from all its connections.
const INBOX: usize = 1024;

/// What a connection task is told by its room.
#[derive(Debug)]
pub enum Outbound {
    Text(String),
    /// Send a close frame and stop; the room has already forgotten the connection.
    Close {
        code: u16,
        reason: &'static str,
    },
}

/// What a room task hears.
#[derive(Debug)]
enum Command {
    Open {
        conn: ConnId,
        claim: Claim,
        ice_servers: Vec<IceServer>,
        outbound: mpsc::Sender<Outbound>,
        ctx: RequestContext,
    },
    Frame {
        conn: ConnId,
        text: String,
    },
    Disconnected {
        conn: ConnId,
    },
    /// The server is stopping: close every connection (1001) and end.
    Shutdown,
}

/// What the room needs to know about its appointment, read when it opens.
#[derive(Debug, Clone, Copy)]
pub struct RoomFacts {
    pub appointment: Uuid,
    pub patient_id: Uuid,
    pub provider_id: Uuid,
}

/// The rooms open on this instance, by appointment.
#[derive(Debug)]
pub struct Consultations {
    rooms: Mutex<HashMap<Uuid, Registered>>,
    next_conn: AtomicU64,
    next_generation: AtomicU64,
    config: RoomConfig,
}

#[derive(Debug)]
struct Registered {
    /// Tells a room apart from a later one for the same appointment.
    generation: u64,
    inbox: mpsc::Sender<Command>,
}

/// A connection's way into its room.
#[derive(Debug)]
pub struct RoomHandle {
    conn: ConnId,
    inbox: mpsc::Sender<Command>,
}

impl RoomHandle {
    /// Passes a text frame to the room; `false` when the room is gone.
    pub async fn frame(&self, text: String) -> bool {
        self.inbox
            .send(Command::Frame {
                conn: self.conn,
                text,
            })
            .await
            .is_ok()
    }

    /// Tells the room the socket is gone; the grace period starts.
    pub async fn disconnected(&self) {
        let _ = self.inbox.send(Command::Disconnected { conn: self.conn }).await;
    }
}

impl Consultations {
    pub fn new(config: RoomConfig) -> Consultations {
        Consultations {
            rooms: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            config,
        }
    }

    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// Rooms open on this instance.
    pub fn open_rooms(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Registered>> {
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts a new connection into the appointment's room, opening the room if this
    /// instance has none. The room answers through `outbound`.
    pub async fn open(
        &self,
        state: &AppState,
        facts: RoomFacts,
        claim: Claim,
        ice_servers: Vec<IceServer>,
        outbound: mpsc::Sender<Outbound>,
        ctx: RequestContext,
    ) -> Option<RoomHandle> {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let mut command = Command::Open {
            conn,
            claim,
            ice_servers,
            outbound,
            ctx,
        };
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
                Ok(()) => return Some(RoomHandle { conn, inbox }),
                Err(mpsc::error::SendError(back)) => {
                    self.forget(facts.appointment, generation);
                    command = back;
                }
            }
        }
        None
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
    outbound: mpsc::Sender<Outbound>,
}

/// The room task: inputs in, effects out, until the room closes.
async fn run(
    state: AppState,
    facts: RoomFacts,
    config: RoomConfig,
    mut inbox: mpsc::Receiver<Command>,
    generation: u64,
) {
    let epoch = Instant::now();
    let now = move || Millis::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut key = [0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        tracing::error!("the random number generator failed; consultation room not opened");
        state.consult.forget(facts.appointment, generation);
        return;
    }
    let mut room = Room::new(facts.appointment, config, GuestLinkKey::from_bytes(key), now());
    let mut conns: HashMap<ConnId, Conn> = HashMap::new();
    // Where each account last connected from, for its audit records.
    let mut origins: HashMap<Uuid, RequestContext> = HashMap::new();
    let mut pending: VecDeque<Input> = VecDeque::new();
    tracing::info!(appointment = %facts.appointment, "consultation room opened");

    'room: loop {
        let deadline = room
            .next_deadline()
            .map(|at| epoch + Duration::from_millis(at.as_millis()));
        let input = tokio::select! {
            command = inbox.recv() => match command {
                None | Some(Command::Shutdown) => {
                    for conn in conns.values() {
                        let _ = conn.outbound.try_send(Outbound::Close { code: 1001, reason: "server shutting down" });
                    }
                    break 'room;
                }
                Some(Command::Open { conn, claim, ice_servers, outbound, ctx }) => {
                    if let Claim::Patient { account } | Claim::Provider { account } = &claim {
                        origins.insert(*account, ctx);
                    }
                    conns.insert(conn, Conn { outbound });
                    Input::Open { conn, claim, ice_servers }
                }
                Some(Command::Frame { conn, text }) => Input::Frame { conn, text },
                Some(Command::Disconnected { conn }) => {
                    conns.remove(&conn);
                    Input::Disconnected { conn }
                }
            },
            () = sleep_until(deadline) => Input::Tick,
        };
        pending.push_back(input);
        while let Some(input) = pending.pop_front() {
            for output in room.handle(now(), input) {
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
                        if let Err(mpsc::error::TrySendError::Full(_)) =
                            c.outbound.try_send(Outbound::Text(text))
                        {
                            // Too slow: drop the sender (its task closes the socket
                            // with 1013) and treat it as a dropped connection.
                            conns.remove(&conn);
                            metrics::counter!("consult_slow_consumers_total").increment(1);
                            pending.push_back(Input::Disconnected { conn });
                        }
                    }
                    Output::Close { conn, reason } => {
                        if let Some(c) = conns.remove(&conn) {
                            let _ = c.outbound.try_send(Outbound::Close {
                                code: reason.ws_code(),
                                reason: reason.as_str(),
                            });
                        }
                    }
                    Output::Audit(record) => {
                        let origin = match record.identity {
                            Identity::Account(id) => origins.get(&id).cloned(),
                            Identity::Guest { .. } => None,
                        };
                        effects::audit(&state, &facts, origin.unwrap_or_default(), record).await;
                    }
                    Output::AppointmentStatus { status, .. } => {
                        effects::appointment_status(&state, &facts, status).await;
                    }
                    Output::Closed { reason } => {
                        tracing::info!(appointment = %facts.appointment, reason = ?reason, "consultation room closed");
                        break 'room;
                    }
                }
            }
        }
    }
    state.consult.forget(facts.appointment, generation);
    metrics::gauge!("consult_rooms_open").decrement(1.0);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
