//! Carewire's consultation-room signaling: the protocol and the room state machine.
//!
//! This crate is pure: messages go in, effects come out. It opens no sockets, touches
//! no database, reads no clock and knows nothing of warp; the server's `consult` module
//! feeds it messages from WebSocket connections, with the time, and carries its effects
//! back out. That keeps every rule (who may join, who is polite, what is relayed to
//! whom, how a dropped participant resumes) testable without IO.
//!
//! The protocol itself, with examples of every message, is in `PROTOCOL.md` beside
//! this crate's `Cargo.toml`.
//!
//! # Layout
//!
//! - [`protocol`]: the wire format `carewire.consult.v1`: seats, roles, client messages
//!   (parsed and validated) and server frames (numbered per participant).
//! - [`room`]: the state machine. [`Room::handle`] takes `(now, Input)` and returns
//!   [`Output`]s: frames to send, connections to close, audit records, appointment
//!   status requests. Phases: waiting room → in call → closed.
//! - `negotiation` (private): the relay lanes between seats, which keep descriptions
//!   and candidates in order and hold early candidates until their description is out.
//! - [`sdp`]: session descriptions, size-capped and parsed with `webrtc`.
//! - [`candidate`]: ICE candidates, checked against the RFC 8839 grammar.
//! - [`guest`]: single-use guest links, HMAC-signed with a per-room key.
//! - [`ice`]: STUN/TURN server lists and coturn `use-auth-secret` TURN credentials.
//! - [`error`]: the stable error codes.
//! - [`time`]: [`Millis`], the caller's monotonic clock.
//! - [`rate`]: the per-connection token bucket behind `RATE_LIMITED`.
//! - `outbox` (private): each participant's numbered event stream, kept for replay.
//!
//! # Driving a room
//!
//! ```
//! use carewire_signaling::{Claim, ConnId, GuestLinkKey, Input, Millis, Output, Room, RoomConfig};
//! use uuid::Uuid;
//!
//! let appointment = Uuid::from_u128(7);
//! // The key comes from a CSPRNG in the server; a constant only in an example.
//! let key = GuestLinkKey::from_bytes([1; 32]);
//! let mut room = Room::new(appointment, RoomConfig::default(), key, Millis::from_millis(0));
//!
//! let patient = ConnId(1);
//! let claim = Claim::Patient { account: Uuid::from_u128(42) };
//! let open = Input::Open { conn: patient, claim, ice_servers: Vec::new() };
//! room.handle(Millis::from_millis(10), open);
//! let text = r#"{"type":"join","id":"c1","protocol":"carewire.consult.v1"}"#.to_owned();
//! for output in room.handle(Millis::from_millis(20), Input::Frame { conn: patient, text }) {
//!     match output {
//!         Output::Send { conn, frame } => { /* write frame.to_json() to conn */ }
//!         Output::Close { conn, reason } => { /* close conn with reason.ws_code() */ }
//!         Output::Audit(record) => { /* append to the audit log */ }
//!         Output::AppointmentStatus { appointment, status } => { /* scheduling */ }
//!         Output::Closed { reason } => { /* drop the room */ }
//!     }
//! }
//! // Call again when the earliest timer falls due.
//! assert!(room.next_deadline().is_some());
//! ```

pub mod candidate;
pub mod error;
pub mod guest;
pub mod ice;
mod negotiation;
mod outbox;
pub mod protocol;
pub mod rate;
pub mod room;
pub mod sdp;
pub mod time;

pub use error::{ErrorCode, Rejection};
pub use guest::GuestLinkKey;
pub use ice::{IceConfig, IceServer, TurnCredentials, TurnSecret, turn_credentials};
pub use protocol::{
    ClientBody, ClientMessage, ClosedReason, GuestRole, LeaveReason, MessageId, PROTOCOL_VERSION, Phase,
    Role, Seat, ServerFrame, ServerMessage,
};
pub use rate::{RateLimit, TokenBucket};
pub use room::{
    AuditAction, AuditRecord, Claim, CloseReason, ConnId, Identity, Input, Output, RequestedStatus, Room,
    RoomConfig, SeatView,
};
pub use time::Millis;
