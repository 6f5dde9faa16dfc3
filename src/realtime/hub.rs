//! This instance's connections, and routing each new event to the ones it concerns.
//!
//! The hub keeps a cursor: the last `seq` it has routed. A connection registers under
//! the same lock that routing takes, and learns the cursor at that moment: events up
//! to it come from the database (replay), events after it through its queue. So the
//! handover from replay to live never drops or repeats an event.
//!
//! Each connection has a bounded queue. Routing never waits for a connection: if its
//! queue is full, the client is not reading fast enough, and it is told to close
//! with 1013 ("try again later"; it resumes where it was). Server memory per
//! connection stays bounded by the queue length.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use super::protocol::ServerMessage;
use super::stream::StreamEvent;
use super::topics::{self, Effect, Identity, Key, Topic, View};

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing {
    pub code: u16,
    pub reason: &'static str,
}

pub const SLOW_CONSUMER: Closing = Closing {
    code: 1013,
    reason: "slow consumer: reconnect and resume",
};
pub const SHUTTING_DOWN: Closing = Closing {
    code: 1001,
    reason: "server shutting down",
};

struct Peer {
    identity: Identity,
    /// The keys it listens on.
    keys: HashSet<Key>,
    tx: mpsc::Sender<Queued>,
    control: watch::Sender<Option<Closing>>,
}

/// A socket outside the gateway (a consultation) that must close when its session
/// ends or its account is disabled: it hears those control events and nothing else.
struct SessionWatcher {
    session: Uuid,
    control: watch::Sender<Option<Closing>>,
}

struct Inner {
    cursor: i64,
    peers: HashMap<u64, Peer>,
    routes: HashMap<Key, HashSet<u64>>,
    /// Account → watcher id → watcher.
    watchers: HashMap<Uuid, HashMap<u64, SessionWatcher>>,
}

#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    queue: usize,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("cursor", &self.cursor)
            .field("peers", &self.peers.len())
            .finish()
    }
}

/// A message waiting for a connection: its `seq` and its text (shared by every
/// connection that gets the same view).
pub type Queued = (i64, Utf8Bytes);

/// What a connection gets when it registers.
#[derive(Debug)]
pub struct Registration {
    pub id: u64,
    /// Events after this come through `rx`; those up to it, from the database.
    pub cursor: i64,
    pub rx: mpsc::Receiver<Queued>,
    pub control: watch::Receiver<Option<Closing>>,
}

impl Hub {
    /// A hub whose connections queue up to `queue` messages each.
    pub fn new(queue: usize) -> Hub {
        Hub {
            inner: Mutex::new(Inner {
                cursor: 0,
                peers: HashMap::new(),
                routes: HashMap::new(),
                watchers: HashMap::new(),
            }),
            next_id: AtomicU64::new(1),
            queue: queue.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last `seq` routed.
    pub fn cursor(&self) -> i64 {
        self.lock().cursor
    }

    /// Starts routing after `seq` (at start-up: the stream's head).
    pub fn start_after(&self, seq: i64) {
        let mut inner = self.lock();
        inner.cursor = inner.cursor.max(seq);
    }

    pub fn connections(&self) -> usize {
        self.lock().peers.len()
    }

    /// Adds a connection listening on its own keys plus `topics`.
    pub fn register(&self, identity: Identity, topics: &[Topic]) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.queue);
        let (control_tx, control) = watch::channel(None);
        let keys = keys_of(&identity, topics);
        let mut inner = self.lock();
        for key in &keys {
            inner.routes.entry(*key).or_default().insert(id);
        }
        inner.peers.insert(
            id,
            Peer {
                identity,
                keys,
                tx,
                control: control_tx,
            },
        );
        metrics::gauge!("ws_connections").set(inner.peers.len() as f64);
        Registration {
            id,
            cursor: inner.cursor,
            rx,
            control,
        }
    }

    /// Follows `topic` from now on; returns the cursor at that moment.
    pub fn subscribe(&self, id: u64, topic: Topic) -> i64 {
        let mut inner = self.lock();
        if let Some(key) = topic.key()
            && let Some(peer) = inner.peers.get_mut(&id)
        {
            peer.keys.insert(key);
            inner.routes.entry(key).or_default().insert(id);
        }
        inner.cursor
    }

    pub fn unsubscribe(&self, id: u64, topic: Topic) {
        let mut inner = self.lock();
        if let Some(key) = topic.key() {
            if let Some(peer) = inner.peers.get_mut(&id) {
                peer.keys.remove(&key);
            }
            remove_route(&mut inner.routes, key, id);
        }
    }

    pub fn unregister(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(peer) = inner.peers.remove(&id) {
            for key in &peer.keys {
                remove_route(&mut inner.routes, *key, id);
            }
        }
        metrics::gauge!("ws_connections").set(inner.peers.len() as f64);
    }

    /// Watches one session of `account`: the receiver gets a [`Closing`] when the
    /// session ends (4401) or the account is disabled (4403). Returns the id to
    /// [`Hub::unwatch_session`] with.
    pub fn watch_session(&self, account: Uuid, session: Uuid) -> (u64, watch::Receiver<Option<Closing>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (control, rx) = watch::channel(None);
        self.lock()
            .watchers
            .entry(account)
            .or_default()
            .insert(id, SessionWatcher { session, control });
        (id, rx)
    }

    pub fn unwatch_session(&self, account: Uuid, id: u64) {
        let mut inner = self.lock();
        if let Some(watchers) = inner.watchers.get_mut(&account) {
            watchers.remove(&id);
            if watchers.is_empty() {
                inner.watchers.remove(&account);
            }
        }
    }

    /// Tells every connection to close.
    pub fn close_all(&self, closing: Closing) {
        for peer in self.lock().peers.values() {
            let _ = peer.control.send(Some(closing));
        }
    }

    /// Routes events (in `seq` order) after the cursor to their connections.
    pub fn deliver(&self, events: &[StreamEvent]) {
        let mut inner = self.lock();
        let mut overflowed = Vec::new();
        for event in events {
            if event.seq <= inner.cursor {
                continue;
            }
            inner.cursor = event.seq;
            if let Some((
                account,
                Effect::Close {
                    session,
                    code,
                    reason,
                },
            )) = topics::control(event)
            {
                for id in inner.routes.get(&Key::Account(account)).into_iter().flatten() {
                    if let Some(peer) = inner.peers.get(id)
                        && session.is_none_or(|s| s == peer.identity.session_id)
                    {
                        let _ = peer.control.send(Some(Closing { code, reason }));
                    }
                }
                for watcher in inner.watchers.get(&account).into_iter().flat_map(HashMap::values) {
                    if session.is_none_or(|s| s == watcher.session) {
                        let _ = watcher.control.send(Some(Closing { code, reason }));
                    }
                }
                continue;
            }
            // Each connection: the most detailed view it may see, and every topic that
            // brought it the event.
            let mut targets: HashMap<u64, (View, Vec<String>)> = HashMap::new();
            for (key, topic, view) in topics::route(event) {
                for id in inner.routes.get(&key).into_iter().flatten() {
                    let entry = targets.entry(*id).or_insert((view, Vec::new()));
                    entry.0 = entry.0.max(view);
                    let name = topic.name();
                    if !entry.1.contains(&name) {
                        entry.1.push(name);
                    }
                }
            }
            let mut rendered: HashMap<(View, Vec<String>), Utf8Bytes> = HashMap::new();
            for (id, (view, names)) in targets {
                let Some(peer) = inner.peers.get(&id) else {
                    continue;
                };
                let text = rendered
                    .entry((view, names.clone()))
                    .or_insert_with(|| event_message(event, view, names).into())
                    .clone();
                match peer.tx.try_send((event.seq, text)) {
                    Ok(()) => metrics::counter!("ws_messages_sent_total").increment(1),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        let _ = peer.control.send(Some(SLOW_CONSUMER));
                        overflowed.push(id);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => overflowed.push(id),
                }
            }
        }
        // A connection that cannot keep up stops receiving now; its task closes it.
        for id in overflowed {
            if let Some(peer) = inner.peers.get_mut(&id) {
                let keys: Vec<Key> = peer.keys.drain().collect();
                for key in keys {
                    remove_route(&mut inner.routes, key, id);
                }
                metrics::counter!("ws_slow_consumer_disconnects_total").increment(1);
            }
        }
    }
}

fn remove_route(routes: &mut HashMap<Key, HashSet<u64>>, key: Key, id: u64) {
    if let Some(ids) = routes.get_mut(&key) {
        ids.remove(&id);
        if ids.is_empty() {
            routes.remove(&key);
        }
    }
}

fn event_message(event: &StreamEvent, view: View, topics: Vec<String>) -> String {
    ServerMessage::Event {
        seq: event.seq,
        topics,
        event: event.kind.clone(),
        data: topics::render(event, view),
    }
    .to_text()
}

fn keys_of(identity: &Identity, topics: &[Topic]) -> HashSet<Key> {
    identity
        .own_keys()
        .into_iter()
        .chain(topics.iter().filter_map(Topic::key))
        .collect()
}

/// The message a connection with `identity` following `topics` gets for a replayed
/// `event`, if any: the same rules as live routing.
pub fn replay_message(identity: &Identity, topics: &[Topic], event: &StreamEvent) -> Option<String> {
    if topics::control(event).is_some() {
        return None;
    }
    let keys = keys_of(identity, topics);
    let mut best: Option<View> = None;
    let mut names = Vec::new();
    for (key, topic, view) in topics::route(event) {
        if keys.contains(&key) {
            best = Some(best.map_or(view, |b| b.max(view)));
            let name = topic.name();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    best.map(|view| event_message(event, view, names))
}

/// Events read from the database per round.
const PUMP_BATCH: i64 = 500;

/// Feeds the hub: whenever the bus says the stream moved (or every second, in case a
/// wake-up was lost), reads the events after the cursor and routes them. A read that
/// fails (the database is away) is tried again every [`PUMP_RETRY`], so live events
/// resume as soon as the database does, not at the next wake-up.
pub async fn pump(hub: Arc<Hub>, db: crate::db::Db, mut wakeups: watch::Receiver<i64>) {
    let mut failing = false;
    loop {
        loop {
            let after = hub.cursor();
            match db
                .run(move |conn| Ok(super::stream::after(conn, after, PUMP_BATCH)?))
                .await
            {
                Ok(events) => {
                    failing = false;
                    let full = events.len() as i64 == PUMP_BATCH;
                    hub.deliver(&events);
                    if !full {
                        break;
                    }
                    // Let connection tasks drain their queues between batches.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "reading the event stream failed; retrying");
                    }
                    failing = true;
                    break;
                }
            }
        }
        let wait = if failing {
            PUMP_RETRY
        } else {
            std::time::Duration::from_secs(1)
        };
        tokio::select! {
            changed = wakeups.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// How soon a failed read of the event stream is tried again.
const PUMP_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
