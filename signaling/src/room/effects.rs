//! What the room asks of the world: the effects the server carries out after each input.
//!
//! The room never performs them itself. The order of the returned list matters and is
//! the order to apply them in: a `Send` before a `Close` of the same connection means
//! the message goes out before the close frame.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::{ClosedReason, LeaveReason, Role, Seat, ServerFrame};

/// A connection, named by the server. Unique across every room of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnId(pub u64);

/// Who holds a seat, as far as the room can tell: an account the server authenticated,
/// or the room's n-th guest invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    Account(Uuid),
    Guest { invite: u32 },
}

/// One effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Serialize `frame` and write it to `conn`.
    Send { conn: ConnId, frame: ServerFrame },
    /// Close `conn`; the room has already forgotten it.
    Close { conn: ConnId, reason: CloseReason },
    /// Write an audit event.
    Audit(AuditRecord),
    /// Ask the scheduling state machine to move the appointment. The request may be
    /// refused there (an appointment already fulfilled stays so); the room does not care.
    AppointmentStatus {
        appointment: Uuid,
        status: RequestedStatus,
    },
    /// The room is finished: every connection was closed; drop the room.
    Closed { reason: ClosedReason },
}

/// Why the room closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The participant sent `leave`.
    Left,
    /// A newer connection with the same identity took the seat.
    Replaced,
    /// Nothing heard for the heartbeat timeout.
    HeartbeatTimeout,
    /// The provider ended the consultation.
    Ended,
    /// The room closed for being empty.
    RoomClosed,
    /// Refused at the door: room full, invalid guest link, closed room, wrong protocol.
    Rejected,
}

impl CloseReason {
    /// The WebSocket close code: 1000 for a normal end, 1008 (policy violation) for a
    /// refusal, and private-use codes the client can tell apart for the rest.
    pub const fn ws_code(self) -> u16 {
        match self {
            CloseReason::Left | CloseReason::Ended | CloseReason::RoomClosed => 1000,
            CloseReason::Rejected => 1008,
            CloseReason::Replaced => 4001,
            CloseReason::HeartbeatTimeout => 4002,
        }
    }

    /// The close frame's reason text (at most 123 bytes on the wire; these are short).
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::Left => "left",
            CloseReason::Replaced => "session_replaced",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::Ended => "ended",
            CloseReason::RoomClosed => "room_closed",
            CloseReason::Rejected => "rejected",
        }
    }
}

/// An appointment status the room asks for; FHIR's `Appointment.status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestedStatus {
    /// The patient has checked in: joined the waiting room for the first time.
    Arrived,
    /// The provider ended a call that took place.
    Fulfilled,
}

/// Who did what in the room, for the audit log. Ids only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub appointment: Uuid,
    /// The seat of the participant the record is about.
    pub seat: Seat,
    pub identity: Identity,
    pub action: AuditAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AuditAction {
    /// Took the seat.
    Joined,
    /// Came back to a held seat; `resumed` when the missed messages were replayed.
    Reconnected { resumed: bool },
    /// Let into the call by the provider.
    Admitted { by: Identity },
    /// Gave up the seat or lost it at the end of the grace period.
    Left { reason: LeaveReason },
    /// Ended the consultation (the provider).
    Ended,
    /// Minted a guest link (the provider).
    GuestInvited { invite: u32, role: Role },
}
