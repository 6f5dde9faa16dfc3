//! The wire protocol `carewire.consult.v1`: JSON objects tagged by `type`, snake_case.
//!
//! - [`client`]: what a browser sends, parsed and validated into [`ClientMessage`].
//! - [`server`]: what the server sends, [`ServerMessage`] inside a [`ServerFrame`] that
//!   carries the participant's sequence number.
//!
//! This module owns the vocabulary shared by both directions: seats, roles, message
//! ids. It knows nothing of rooms; the room decides what to say and to whom.

pub mod client;
pub mod server;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use client::{BadFrame, ClientBody, ClientMessage};
pub use server::{Joined, PeerState, PeerView, ServerFrame, ServerMessage};

/// The protocol a client must name in `join`. A breaking change gets a new name, and a
/// server may speak several while clients move over.
pub const PROTOCOL_VERSION: &str = "carewire.consult.v1";

/// The largest frame accepted, in bytes: a 64 KiB description plus its JSON escaping.
pub const MAX_FRAME_BYTES: usize = 128 * 1024;

/// A place in the room. Every consultation has a patient seat and a provider seat; the
/// provider may open the guest seat for one interpreter or caregiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seat {
    Patient,
    Provider,
    Guest,
}

impl Seat {
    pub const ALL: [Seat; 3] = [Seat::Patient, Seat::Provider, Seat::Guest];

    pub const fn as_str(self) -> &'static str {
        match self {
            Seat::Patient => "patient",
            Seat::Provider => "provider",
            Seat::Guest => "guest",
        }
    }

    /// Whether `self` is the polite peer in its pair with `peer`.
    ///
    /// Seats are ranked guest < patient < provider, and in every pair the lower rank is
    /// polite: the provider is impolite toward everyone, the guest polite toward
    /// everyone, the patient polite toward the provider and impolite toward a guest.
    /// Any fixed order would do; this one means the provider's offers win glare, and
    /// the provider is the one the others are there to see.
    pub fn polite_toward(self, peer: Seat) -> bool {
        self.rank() < peer.rank()
    }

    const fn rank(self) -> u8 {
        match self {
            Seat::Guest => 0,
            Seat::Patient => 1,
            Seat::Provider => 2,
        }
    }
}

impl fmt::Display for Seat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a participant is, as shown to the others. The guest seat's role is chosen by
/// the provider when inviting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Patient,
    Provider,
    Interpreter,
    Caregiver,
    Guest,
}

/// The roles a provider may give the guest seat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestRole {
    Interpreter,
    Caregiver,
    #[default]
    Guest,
}

impl From<GuestRole> for Role {
    fn from(role: GuestRole) -> Role {
        match role {
            GuestRole::Interpreter => Role::Interpreter,
            GuestRole::Caregiver => Role::Caregiver,
            GuestRole::Guest => Role::Guest,
        }
    }
}

/// Where the consultation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The provider has not admitted anyone yet; participants wait, media does not flow.
    Waiting,
    /// Admitted: descriptions and candidates are relayed.
    InCall,
    /// Ended by the provider or closed for being empty. Nothing more happens.
    Closed,
}

/// Why a participant's seat was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// Its connection dropped and it did not come back within the grace period.
    TimedOut,
}

/// Why the room closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedReason {
    /// The provider ended the consultation.
    Ended,
    /// Nobody held a seat for the configured timeout.
    Empty,
}

/// The client's name for one of its messages, echoed in replies and errors:
/// 1 to 64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(String);

/// A string that is not a valid [`MessageId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a message id is 1 to 64 printable ASCII characters")]
pub struct InvalidMessageId;

impl MessageId {
    pub fn parse(id: impl Into<String>) -> Result<MessageId, InvalidMessageId> {
        let id = id.into();
        if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(MessageId(id))
        } else {
            Err(InvalidMessageId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MessageId {
    type Error = InvalidMessageId;

    fn try_from(id: String) -> Result<MessageId, InvalidMessageId> {
        MessageId::parse(id)
    }
}

impl From<MessageId> for String {
    fn from(id: MessageId) -> String {
        id.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text relayed as is (an SDP, a guest token) that must not show up in logs: it
/// serializes transparently, and its `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Opaque(String);

impl Opaque {
    pub fn new(text: impl Into<String>) -> Opaque {
        Opaque(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opaque({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_of_seats_has_exactly_one_polite_peer() {
        for a in Seat::ALL {
            for b in Seat::ALL {
                if a != b {
                    assert_ne!(a.polite_toward(b), b.polite_toward(a), "{a} and {b}");
                }
            }
        }
    }

    #[test]
    fn the_patient_is_polite_toward_the_provider_and_the_guest_toward_both() {
        assert!(Seat::Patient.polite_toward(Seat::Provider));
        assert!(!Seat::Provider.polite_toward(Seat::Patient));
        assert!(Seat::Guest.polite_toward(Seat::Provider));
        assert!(Seat::Guest.polite_toward(Seat::Patient));
    }

    #[test]
    fn message_ids_are_short_printable_ascii() {
        assert!(MessageId::parse("c-17").is_ok());
        assert!(MessageId::parse("").is_err());
        assert!(MessageId::parse("has space").is_err());
        assert!(MessageId::parse("x".repeat(65)).is_err());
    }

    /// Keeps PROTOCOL.md honest: every complete example in it parses as the message it
    /// shows (abbreviated ones, with "…", are skipped).
    #[test]
    fn the_examples_in_the_protocol_document_parse() {
        let document = include_str!("../../PROTOCOL.md");
        let mut checked = 0;
        for block in document.split("```json").skip(1) {
            let block = block.split("```").next().unwrap();
            for value in serde_json::Deserializer::from_str(block).into_iter::<serde_json::Value>() {
                let value = value.unwrap();
                let text = value.to_string();
                if text.contains('…') {
                    continue;
                }
                if value.get("id").is_some() {
                    ClientMessage::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                } else {
                    serde_json::from_str::<ServerFrame>(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                }
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} examples found");
    }

    #[test]
    fn opaque_text_is_transparent_on_the_wire_and_hidden_in_debug() {
        let secret = Opaque::new("v=0 with 10.0.0.1");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"v=0 with 10.0.0.1\"");
        assert!(!format!("{secret:?}").contains("10.0.0.1"));
    }
}
