//! The WebSocket protocol, version `carewire.v1`: JSON text frames, one message each.
//!
//! Client messages carry an `id` (a string the client picks) that the server answers
//! with `ack` or `error`. Server messages that carry events have a `seq`: the
//! position in the event stream, increasing strictly on each connection; reconnect
//! with `resume_from=<the last seq you received>` to get exactly what you missed.
//! The full description, with examples, is `docs/realtime-protocol.md`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The protocol this server speaks (offered as a WebSocket subprotocol too).
pub const PROTOCOL: &str = "carewire.v1";

/// Longest client-chosen message id.
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Follow a topic from now on (`ack` carries the current `seq`).
    Subscribe {
        id: String,
        topic: String,
    },
    Unsubscribe {
        id: String,
        topic: String,
    },
    /// Mark a notification read.
    Read {
        id: String,
        notification_id: Uuid,
    },
    /// Application-level ping (WebSocket pings are answered too).
    Ping {
        id: String,
    },
}

impl ClientMessage {
    pub fn id(&self) -> &str {
        match self {
            ClientMessage::Subscribe { id, .. }
            | ClientMessage::Unsubscribe { id, .. }
            | ClientMessage::Read { id, .. }
            | ClientMessage::Ping { id } => id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message on every connection.
    Welcome {
        protocol: &'static str,
        /// Live from here: events after this `seq` follow.
        seq: i64,
        /// Whether missed events (after `resume_from`) are replayed first.
        resumed: bool,
        account_id: Uuid,
        topics: Vec<String>,
        heartbeat_secs: u64,
    },
    Ack {
        id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: &'static str,
        message: String,
    },
    Event {
        seq: i64,
        topics: Vec<String>,
        event: String,
        data: Value,
    },
    /// `resume_from` is older than what the server keeps (or unknown): fetch current
    /// state over REST, then carry on from `seq`.
    ResyncRequired {
        seq: i64,
        reason: &'static str,
    },
    /// Unread notifications, sent on a fresh (not resumed) connection.
    Notifications {
        items: Vec<Value>,
    },
    Pong {
        id: String,
    },
}

impl ServerMessage {
    pub fn error(id: Option<&str>, code: &'static str, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error {
            id: id.map(str::to_owned),
            code,
            message: message.into(),
        }
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"type":"error","code":"internal","message":"unserializable"}"#.into())
    }
}

/// Error codes clients see.
pub mod code {
    pub const BAD_MESSAGE: &str = "bad_message";
    pub const UNKNOWN_TOPIC: &str = "unknown_topic";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const NOT_FOUND: &str = "not_found";
    pub const INTERNAL: &str = "internal";
}

/// Parses a client frame: a known message with a sane id, or the error to answer.
pub fn parse(text: &str) -> Result<ClientMessage, ServerMessage> {
    let message: ClientMessage = serde_json::from_str(text).map_err(|e| {
        // Echo the id when there is one, so the client can match the error.
        let id = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
            .filter(|id| id.len() <= MAX_ID_LEN);
        let reason = if e.to_string().contains("unknown variant") {
            "unknown message type"
        } else {
            "not a valid message"
        };
        ServerMessage::error(id.as_deref(), code::BAD_MESSAGE, reason)
    })?;
    if message.id().is_empty() || message.id().len() > MAX_ID_LEN {
        return Err(ServerMessage::error(
            None,
            code::BAD_MESSAGE,
            "id must be 1 to 64 characters",
        ));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscribe_message_parses() {
        assert_eq!(
            parse(r#"{"type":"subscribe","id":"1","topic":"appointments"}"#),
            Ok(ClientMessage::Subscribe {
                id: "1".into(),
                topic: "appointments".into()
            })
        );
    }

    #[test]
    fn unknown_types_and_fields_are_refused_with_the_id_echoed() {
        let Err(ServerMessage::Error { id, code, .. }) = parse(r#"{"type":"shout","id":"7"}"#) else {
            panic!("accepted");
        };
        assert_eq!((id.as_deref(), code), (Some("7"), code::BAD_MESSAGE));
        assert!(parse(r#"{"type":"ping","id":"1","extra":true}"#).is_err());
        assert!(parse("not json").is_err());
        assert!(parse(&format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(65))).is_err());
    }

    #[test]
    fn server_messages_are_tagged_json() {
        let text = ServerMessage::Ack {
            id: "3".into(),
            seq: Some(9),
        }
        .to_text();
        assert_eq!(text, r#"{"type":"ack","id":"3","seq":9}"#);
    }
}
