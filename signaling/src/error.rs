//! The stable error codes of the protocol and the rejection that carries one.
//!
//! Codes are the contract: clients branch on them, and they never change meaning once
//! shipped. Messages are for people and say what was wrong with the *shape* of the
//! input; they never echo what the client sent, so a rejection can be logged without
//! carrying an SDP's addresses or anything a user typed.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Why the server refused something. Serialized as `SCREAMING_SNAKE_CASE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The sender's seat may not do this (only the provider admits, ends and invites).
    Unauthorized,
    /// The seat the sender claims is held by someone else, or the room has no room for
    /// another connection.
    RoomFull,
    /// Outside the appointment's consultation window. Decided by the server, which knows
    /// the schedule; the code lives here so that every refusal speaks one vocabulary.
    NotInWindow,
    /// A session description that is too large or does not parse.
    BadSdp,
    /// An ICE candidate that is too large or does not follow the candidate grammar.
    BadCandidate,
    /// A message that is well formed but does not fit the room's current state.
    StateMismatch,
    /// The connection sends faster than its token bucket refills.
    RateLimited,
    /// The connection has not joined, or addressed a seat nobody holds.
    NotInRoom,
    /// A `type` this protocol version does not have.
    UnknownType,
    /// Not JSON, not an object, a missing or mistyped field, or the wrong protocol.
    BadMessage,
    /// A guest link that is forged, expired, revoked or already used.
    GuestLinkInvalid,
}

impl ErrorCode {
    /// Every code, in the order the protocol document lists them.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::Unauthorized,
        ErrorCode::RoomFull,
        ErrorCode::NotInWindow,
        ErrorCode::BadSdp,
        ErrorCode::BadCandidate,
        ErrorCode::StateMismatch,
        ErrorCode::RateLimited,
        ErrorCode::NotInRoom,
        ErrorCode::UnknownType,
        ErrorCode::BadMessage,
        ErrorCode::GuestLinkInvalid,
    ];

    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::RoomFull => "ROOM_FULL",
            ErrorCode::NotInWindow => "NOT_IN_WINDOW",
            ErrorCode::BadSdp => "BAD_SDP",
            ErrorCode::BadCandidate => "BAD_CANDIDATE",
            ErrorCode::StateMismatch => "STATE_MISMATCH",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::NotInRoom => "NOT_IN_ROOM",
            ErrorCode::UnknownType => "UNKNOWN_TYPE",
            ErrorCode::BadMessage => "BAD_MESSAGE",
            ErrorCode::GuestLinkInvalid => "GUEST_LINK_INVALID",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: a stable code and a short explanation built only from literals and
/// limits, never from the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serializes_as_its_wire_name() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }
}
