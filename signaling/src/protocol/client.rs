//! Client → server messages: every one is `{"type": …, "id": …, …}`, and is parsed
//! in three steps so that each failure gets its own code:
//!
//! 1. the frame is a JSON object no larger than [`MAX_FRAME_BYTES`]
//!    with a string `type` and `id` (`BAD_MESSAGE`);
//! 2. the `type` is one this version knows (`UNKNOWN_TYPE`);
//! 3. the fields fit that type (`BAD_MESSAGE`), and what they carry is valid:
//!    descriptions parse (`BAD_SDP`), candidates follow the grammar (`BAD_CANDIDATE`).
//!
//! Unknown fields are ignored, so a later minor revision can add optional fields
//! without breaking older servers.

use serde::{Deserialize, Serialize};

use super::{GuestRole, MAX_FRAME_BYTES, MessageId, PROTOCOL_VERSION, Seat};
use crate::candidate::{self, CandidateInit, IceCandidate};
use crate::error::{ErrorCode, Rejection};
use crate::sdp::{SdpKind, SessionDescription};

/// A validated client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    /// Chosen by the client; replies and errors about this message carry it back.
    pub id: MessageId,
    pub body: ClientBody,
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientBody {
    /// Take the seat the server assigned this connection. With `last_seq`, resume: the
    /// server replays what came after it, if it still has it.
    Join {
        last_seq: Option<u64>,
    },
    /// An offer or an answer for the peer in seat `to` (`type` is `offer` or `answer`).
    Description {
        to: Seat,
        description: SessionDescription,
    },
    Candidate {
        to: Seat,
        candidate: IceCandidate,
    },
    /// No more candidates for this ICE generation.
    EndOfCandidates {
        to: Seat,
        username_fragment: Option<String>,
    },
    /// Ask the peer in seat `to` to call `restartIce()`.
    IceRestart {
        to: Seat,
    },
    Ping,
    /// Give up the seat now rather than after the grace period.
    Leave,
    /// Provider only: let everyone waiting into the call.
    Admit,
    /// Provider only: end the consultation for everyone.
    End,
    /// Provider only: get a single-use link for the guest seat.
    InviteGuest {
        role: GuestRole,
    },
}

/// A frame that did not become a [`ClientMessage`]: the id, when one could be read, so
/// the error can point at the message, and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rejection}")]
pub struct BadFrame {
    pub id: Option<MessageId>,
    pub rejection: Rejection,
}

/// The client message types of this protocol version.
pub const CLIENT_TYPES: [&str; 11] = [
    "join",
    "offer",
    "answer",
    "candidate",
    "end_of_candidates",
    "ice_restart",
    "ping",
    "leave",
    "admit",
    "end",
    "invite_guest",
];

impl ClientMessage {
    /// Parses and validates one text frame.
    pub fn parse(text: &str) -> Result<ClientMessage, BadFrame> {
        let (id, wire) = parse_wire(text)?;
        let body = validate(wire).map_err(|rejection| BadFrame {
            id: Some(id.clone()),
            rejection,
        })?;
        Ok(ClientMessage { id, body })
    }

    /// Reads only the envelope: the id, if the frame has a valid one. Used to answer a
    /// frame that is refused before it is parsed (rate limiting).
    pub fn peek_id(text: &str) -> Option<MessageId> {
        #[derive(Deserialize)]
        struct Envelope {
            id: MessageId,
        }
        if text.len() > MAX_FRAME_BYTES {
            return None;
        }
        serde_json::from_str::<Envelope>(text)
            .ok()
            .map(|envelope| envelope.id)
    }

    /// The message as a client would send it. For Rust clients and tests.
    pub fn to_json(&self) -> String {
        let id = self.id.clone();
        let wire = match &self.body {
            ClientBody::Join { last_seq } => Wire::Join {
                protocol: PROTOCOL_VERSION.to_owned(),
                last_seq: *last_seq,
            },
            ClientBody::Description { to, description } => {
                let described = Described {
                    to: *to,
                    sdp: description.as_str().to_owned(),
                };
                match description.kind() {
                    SdpKind::Offer => Wire::Offer(described),
                    SdpKind::Answer => Wire::Answer(described),
                }
            }
            ClientBody::Candidate { to, candidate } => Wire::Candidate {
                to: *to,
                init: candidate.init().clone(),
            },
            ClientBody::EndOfCandidates {
                to,
                username_fragment,
            } => Wire::EndOfCandidates {
                to: *to,
                username_fragment: username_fragment.clone(),
            },
            ClientBody::IceRestart { to } => Wire::IceRestart { to: *to },
            ClientBody::Ping => Wire::Ping {},
            ClientBody::Leave => Wire::Leave {},
            ClientBody::Admit => Wire::Admit {},
            ClientBody::End => Wire::End {},
            ClientBody::InviteGuest { role } => Wire::InviteGuest { role: *role },
        };
        let framed = Framed { id, wire };
        // A derived Serialize over strings, numbers and enums cannot fail.
        serde_json::to_string(&framed).unwrap_or_default()
    }
}

/// The wire form, before the payload is validated.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    Join {
        protocol: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seq: Option<u64>,
    },
    Offer(Described),
    Answer(Described),
    Candidate {
        to: Seat,
        #[serde(flatten)]
        init: CandidateInit,
    },
    EndOfCandidates {
        to: Seat,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username_fragment: Option<String>,
    },
    IceRestart {
        to: Seat,
    },
    Ping {},
    Leave {},
    Admit {},
    End {},
    InviteGuest {
        #[serde(default)]
        role: GuestRole,
    },
}

#[derive(Serialize, Deserialize)]
struct Described {
    to: Seat,
    sdp: String,
}

#[derive(Serialize)]
struct Framed {
    id: MessageId,
    #[serde(flatten)]
    wire: Wire,
}

fn parse_wire(text: &str) -> Result<(MessageId, Wire), BadFrame> {
    let bad = |id: Option<MessageId>, code, message: &'static str| BadFrame {
        id,
        rejection: Rejection::new(code, message),
    };
    if text.len() > MAX_FRAME_BYTES {
        return Err(bad(None, ErrorCode::BadMessage, "frame is larger than 128 KiB"));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| bad(None, ErrorCode::BadMessage, "frame is not valid JSON"))?;
    let serde_json::Value::Object(object) = &value else {
        return Err(bad(None, ErrorCode::BadMessage, "frame is not a JSON object"));
    };
    let id = object
        .get("id")
        .and_then(|id| id.as_str())
        .and_then(|id| MessageId::parse(id).ok());
    let Some(id) = id else {
        return Err(bad(
            None,
            ErrorCode::BadMessage,
            "every message has an id of 1 to 64 printable ASCII characters",
        ));
    };
    let Some(kind) = object.get("type").and_then(|kind| kind.as_str()) else {
        return Err(bad(
            Some(id),
            ErrorCode::BadMessage,
            "every message has a string type",
        ));
    };
    if !CLIENT_TYPES.contains(&kind) {
        return Err(bad(Some(id), ErrorCode::UnknownType, "unknown message type"));
    }
    // Serde's own messages can quote the input back; ours name the problem only.
    let wire = Wire::deserialize(value).map_err(|_| {
        bad(
            Some(id.clone()),
            ErrorCode::BadMessage,
            "missing or mistyped field for this message type",
        )
    })?;
    Ok((id, wire))
}

fn validate(wire: Wire) -> Result<ClientBody, Rejection> {
    Ok(match wire {
        Wire::Join { protocol, last_seq } => {
            if protocol != PROTOCOL_VERSION {
                return Err(Rejection::new(
                    ErrorCode::BadMessage,
                    "unsupported protocol; this server speaks carewire.consult.v1",
                ));
            }
            ClientBody::Join { last_seq }
        }
        Wire::Offer(Described { to, sdp }) => ClientBody::Description {
            to,
            description: SessionDescription::parse(SdpKind::Offer, sdp)?,
        },
        Wire::Answer(Described { to, sdp }) => ClientBody::Description {
            to,
            description: SessionDescription::parse(SdpKind::Answer, sdp)?,
        },
        Wire::Candidate { to, init } => ClientBody::Candidate {
            to,
            candidate: IceCandidate::parse(init)?,
        },
        Wire::EndOfCandidates {
            to,
            username_fragment,
        } => {
            if let Some(ufrag) = &username_fragment {
                candidate::check_ufrag(ufrag)?;
            }
            ClientBody::EndOfCandidates {
                to,
                username_fragment,
            }
        }
        Wire::IceRestart { to } => ClientBody::IceRestart { to },
        Wire::Ping {} => ClientBody::Ping,
        Wire::Leave {} => ClientBody::Leave,
        Wire::Admit {} => ClientBody::Admit,
        Wire::End {} => ClientBody::End,
        Wire::InviteGuest { role } => ClientBody::InviteGuest { role },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::fixtures::description;

    fn code_of(text: &str) -> ErrorCode {
        ClientMessage::parse(text).unwrap_err().rejection.code
    }

    #[test]
    fn a_join_with_the_current_protocol_parses() {
        let message = ClientMessage::parse(
            r#"{"type":"join","id":"c1","protocol":"carewire.consult.v1","last_seq":4}"#,
        )
        .unwrap();
        assert_eq!(message.id.as_str(), "c1");
        assert_eq!(message.body, ClientBody::Join { last_seq: Some(4) });
    }

    #[test]
    fn a_join_with_another_protocol_is_a_bad_message_that_names_the_id() {
        let err = ClientMessage::parse(r#"{"type":"join","id":"c1","protocol":"carewire.consult.v0"}"#)
            .unwrap_err();
        assert_eq!(err.rejection.code, ErrorCode::BadMessage);
        assert_eq!(err.id.unwrap().as_str(), "c1");
    }

    #[test]
    fn an_unknown_type_is_rejected_as_unknown_type() {
        assert_eq!(
            code_of(r#"{"type":"teleport","id":"c1"}"#),
            ErrorCode::UnknownType
        );
    }

    #[test]
    fn frames_that_are_not_objects_with_an_id_are_bad_messages() {
        for text in [
            "",
            "null",
            "[1,2]",
            "{\"type\":\"ping\"}",
            "{\"type\":\"ping\",\"id\":7}",
            "{\"id\":\"c1\"}",
        ] {
            assert_eq!(code_of(text), ErrorCode::BadMessage, "{text}");
        }
    }

    #[test]
    fn a_known_type_with_missing_fields_is_a_bad_message() {
        assert_eq!(
            code_of(r#"{"type":"offer","id":"c2","sdp":"v=0"}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(r#"{"type":"offer","id":"c2","to":"nurse","sdp":"v=0"}"#),
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn an_offer_with_invalid_sdp_is_bad_sdp() {
        assert_eq!(
            code_of(r#"{"type":"offer","id":"c2","to":"provider","sdp":"nonsense"}"#),
            ErrorCode::BadSdp
        );
    }

    #[test]
    fn a_candidate_with_a_garbage_line_is_bad_candidate() {
        let text =
            r#"{"type":"candidate","id":"c3","to":"provider","candidate":"candidate:x","sdp_mid":"0"}"#;
        assert_eq!(code_of(text), ErrorCode::BadCandidate);
    }

    #[test]
    fn a_frame_over_128_kib_is_rejected_without_parsing() {
        let text = format!(
            r#"{{"type":"ping","id":"c1","pad":"{}"}}"#,
            "x".repeat(MAX_FRAME_BYTES)
        );
        assert_eq!(code_of(&text), ErrorCode::BadMessage);
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let message = ClientMessage::parse(r#"{"type":"ping","id":"c9","sent_at":12}"#).unwrap();
        assert_eq!(message.body, ClientBody::Ping);
    }

    #[test]
    fn every_message_survives_a_round_trip_through_json() {
        let offer = SessionDescription::parse(SdpKind::Offer, description(1, "Ab3d")).unwrap();
        let candidate = IceCandidate::parse(CandidateInit {
            candidate: "candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host".to_owned(),
            sdp_mid: Some("0".to_owned()),
            sdp_mline_index: Some(0),
            username_fragment: Some("Ab3d".to_owned()),
        })
        .unwrap();
        let bodies = [
            ClientBody::Join { last_seq: None },
            ClientBody::Join { last_seq: Some(9) },
            ClientBody::Description {
                to: Seat::Provider,
                description: offer,
            },
            ClientBody::Candidate {
                to: Seat::Provider,
                candidate,
            },
            ClientBody::EndOfCandidates {
                to: Seat::Guest,
                username_fragment: Some("Ab3d".to_owned()),
            },
            ClientBody::IceRestart { to: Seat::Patient },
            ClientBody::Ping,
            ClientBody::Leave,
            ClientBody::Admit,
            ClientBody::End,
            ClientBody::InviteGuest {
                role: GuestRole::Interpreter,
            },
        ];
        for body in bodies {
            let message = ClientMessage {
                id: MessageId::parse("c1").unwrap(),
                body,
            };
            assert_eq!(ClientMessage::parse(&message.to_json()).unwrap(), message);
        }
    }

    #[test]
    fn the_id_can_be_peeked_without_parsing_the_payload() {
        let id = ClientMessage::peek_id(r#"{"type":"offer","id":"c5","to":"provider","sdp":"junk"}"#);
        assert_eq!(id.unwrap().as_str(), "c5");
    }
}
