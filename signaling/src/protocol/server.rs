//! Server → client messages.
//!
//! Room events (everything a participant must not miss: who joined, who left, the
//! descriptions and candidates addressed to it) are numbered per participant and kept
//! in its outbox, so a participant who reconnects says the last `seq` it saw and gets
//! the rest. Replies that only make sense on the connection that asked (`joined`,
//! `pong`, `error`, `session_replaced`) carry no `seq` and are never replayed.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{ClosedReason, LeaveReason, MessageId, Opaque, Phase, Role, Seat};
use crate::candidate::CandidateInit;
use crate::error::{ErrorCode, Rejection};
use crate::ice::IceServer;

/// One frame on the wire: `{"seq": 7, "type": "offer", …}`, or without `seq` for
/// connection-scoped replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub message: ServerMessage,
}

impl ServerFrame {
    /// An unsequenced frame.
    pub fn reply(message: ServerMessage) -> ServerFrame {
        ServerFrame { seq: None, message }
    }

    /// An error frame, for refusals the server makes before a room is involved
    /// (`NOT_IN_WINDOW`, `UNAUTHORIZED` at the door).
    pub fn error(in_reply_to: Option<MessageId>, rejection: Rejection) -> ServerFrame {
        ServerFrame::reply(ServerMessage::Error {
            in_reply_to,
            code: rejection.code,
            message: rejection.message,
        })
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// What the server tells a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The answer to `join`.
    Joined(Joined),
    /// Someone took a seat, or came back to it. `resumed: false` means a new browser
    /// session: drop any peer connection you had with that seat and start a new one.
    PeerJoined {
        seat: Seat,
        role: Role,
        /// Whether *you* are the polite peer in your pair with this one.
        polite: bool,
        resumed: bool,
    },
    /// The seat is free again.
    PeerLeft {
        seat: Seat,
        reason: LeaveReason,
    },
    /// The peer's connection dropped; its seat is held for the grace period.
    PeerReconnecting {
        seat: Seat,
    },
    /// Another connection with your identity took your seat; this one is closing.
    SessionReplaced,
    /// You are in the waiting room until the provider admits you.
    Waiting,
    /// The provider admitted the waiting participants: the call has started.
    Admitted,
    RoomClosed {
        reason: ClosedReason,
    },
    Offer {
        from: Seat,
        sdp: Opaque,
    },
    Answer {
        from: Seat,
        sdp: Opaque,
    },
    Candidate {
        from: Seat,
        #[serde(flatten)]
        candidate: CandidateInit,
    },
    EndOfCandidates {
        from: Seat,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username_fragment: Option<String>,
    },
    /// The peer asks you to call `restartIce()`.
    IceRestart {
        from: Seat,
    },
    /// The single-use guest link token, for the provider who asked.
    GuestLink {
        in_reply_to: MessageId,
        token: Opaque,
        role: Role,
        expires_in_ms: u64,
    },
    Pong {
        in_reply_to: MessageId,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_reply_to: Option<MessageId>,
        code: ErrorCode,
        message: Cow<'static, str>,
    },
}

/// The answer to `join`: who you are here and who else is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub in_reply_to: MessageId,
    pub protocol: Cow<'static, str>,
    pub seat: Seat,
    pub role: Role,
    /// Your flag in the pair that includes the provider (for the provider: in every
    /// pair). Per-peer flags are in `participants`; they differ only for a patient with
    /// a guest present, who is impolite toward the guest.
    pub polite: bool,
    pub phase: Phase,
    pub participants: Vec<PeerView>,
    /// True when the messages you missed follow this one; false when you start afresh.
    pub resumed: bool,
    /// The last `seq` assigned to you before this join. When resumed, the frames after
    /// your `last_seq` up to this one follow.
    pub last_seq: u64,
    /// Send `ping` this often. A connection silent for the server's heartbeat timeout
    /// (15 s by default: three intervals) is treated as dropped.
    pub ping_interval_ms: u64,
    /// STUN and TURN servers for `new RTCPeerConnection({iceServers})`.
    pub ice_servers: Vec<IceServer>,
}

/// Another participant, as seen by the one receiving this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    pub seat: Seat,
    pub role: Role,
    /// Whether *you* are the polite peer in your pair with this one.
    pub polite: bool,
    pub state: PeerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    Connected,
    Reconnecting,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequenced_frame_puts_seq_beside_the_type() {
        let frame = ServerFrame {
            seq: Some(7),
            message: ServerMessage::PeerReconnecting { seat: Seat::Patient },
        };
        assert_eq!(
            frame.to_json().unwrap(),
            r#"{"seq":7,"type":"peer_reconnecting","seat":"patient"}"#
        );
    }

    #[test]
    fn a_reply_has_no_seq() {
        let frame = ServerFrame::reply(ServerMessage::Pong {
            in_reply_to: MessageId::parse("c4").unwrap(),
        });
        assert_eq!(frame.to_json().unwrap(), r#"{"type":"pong","in_reply_to":"c4"}"#);
    }

    #[test]
    fn a_relayed_candidate_flattens_the_browser_fields() {
        let frame = ServerFrame {
            seq: Some(3),
            message: ServerMessage::Candidate {
                from: Seat::Provider,
                candidate: CandidateInit {
                    candidate: "candidate:1 1 udp 1 10.0.0.1 5000 typ host".to_owned(),
                    sdp_mid: Some("0".to_owned()),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                },
            },
        };
        let json = frame.to_json().unwrap();
        assert!(
            json.contains(r#""from":"provider","candidate":"candidate:1"#),
            "{json}"
        );
        let back: ServerFrame = serde_json::from_str(&json).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn an_error_frame_carries_the_stable_code() {
        let frame = ServerFrame::error(None, Rejection::new(ErrorCode::NotInWindow, "too early"));
        assert_eq!(
            frame.to_json().unwrap(),
            r#"{"type":"error","code":"NOT_IN_WINDOW","message":"too early"}"#
        );
    }
}
