//! Video consultations: the server side of the consultation room.
//!
//! The room's rules (seats, waiting room, who is polite, relaying, resume, guest links)
//! live in the pure `carewire-signaling` crate; this module gives them sockets, a
//! clock, the database and the audit log.
//!
//! - [`admission`]: who may enter an appointment's room and when, pure.
//! - [`routes`]: `GET /v1/consultations/{id}` (the WebSocket, protocol
//!   `carewire.consult.v1`) and `GET /v1/consultations/{id}/ice-servers`.
//! - [`rooms`]: this instance's rooms, one task each, and the connection queues.
//! - [`effects`]: audit records and appointment status changes the rooms ask for.
//! - [`relay`]: rooms across instances: which instance owns a room (a lease in
//!   `consult_rooms`), and frames relayed through PostgreSQL to and from it.

pub mod admission;
pub mod effects;
pub mod relay;
pub mod rooms;
pub mod routes;

pub use rooms::Consultations;

use std::ops::Deref;
use std::sync::Arc;

use crate::realtime::hub::Hub;
use crate::state::AppState;

/// What the consultation routes and rooms share: the server's state, this
/// instance's rooms, and its connections (a signed-in participant's room socket
/// closes when their session ends).
#[derive(Debug, Clone)]
pub struct ConsultState {
    pub app: AppState,
    pub rooms: Arc<Consultations>,
    pub hub: Arc<Hub>,
}

impl Deref for ConsultState {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}
