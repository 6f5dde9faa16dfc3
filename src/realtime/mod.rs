//! The real-time gateway: WebSocket clients follow the events the rest of the server
//! writes to the outbox, on whichever instance they are connected to, and resume
//! where they left off after a drop.
//!
//! - [`stream`]: the event stream in PostgreSQL: sequencing (commit order, gap-free
//!   `seq`), reading after a `seq`, replay for one audience, retention.
//! - [`bus`]: how an instance learns that the stream moved: a dedicated connection
//!   that looks for unnumbered events, runs the sequencer and `LISTEN`s for the
//!   `seq` it announces, reconnecting with backoff. Behind a trait.
//! - [`topics`]: what a connection may follow and what each event looks like on each
//!   topic (pure: no PHI leaves on a public topic).
//! - [`hub`]: this instance's connections, and the pump that routes each new event
//!   to the connections it concerns through bounded queues.
//! - [`protocol`]: the versioned JSON messages (see `docs/realtime-protocol.md`).
//! - [`gateway`]: `GET /v1/ws`: the handshake (credentials, Origin, upgrade through
//!   hyper with our own `WebSocketConfig`) and the connection loop (heartbeats,
//!   limits, subscriptions, resume).
//!
//! Nothing here decides what happened: events are written by the business
//! transaction that made them happen, so a client never hears of something that
//! rolled back, and never misses something that committed.

pub mod bus;
pub mod gateway;
pub mod hub;
pub mod protocol;
pub mod stream;
pub mod topics;

use std::ops::Deref;
use std::sync::Arc;

use crate::state::AppState;

/// What the event stream's routes share: the server's state and this instance's
/// connections.
#[derive(Debug, Clone)]
pub struct RealtimeState {
    pub app: AppState,
    pub hub: Arc<hub::Hub>,
}

impl Deref for RealtimeState {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}
