//! The canonical byte encoding of a sealed event: the exact bytes the chain hashes.
//!
//! Version 1, all integers big-endian:
//!
//! ```text
//! u8  version (= 1)
//! u64 seq
//! i64 recorded_at, microseconds since the Unix epoch (UTC)
//! str actor kind ("user" | "system" | "anonymous")
//! opt actor id (uuid, 16 bytes)
//! opt actor role or component (str)
//! str action            str resource type        opt resource id (uuid)
//! opt patient id (uuid) str outcome ("success" | "failure")
//! opt failure reason    str purpose
//! opt request id (str)  opt client ip (str)      opt user agent (str)
//! u32 number of details, then per detail in key order:
//!     str key, u8 tag (1 id, 2 code, 3 count), then uuid (16) | str | i64
//! ```
//!
//! where `str` is a u32 length followed by UTF-8 bytes, and `opt` is a byte 0 (absent)
//! or 1 followed by the value. Every field is length-prefixed or fixed-size, so two
//! different events never share an encoding.

use chrono::{DateTime, Utc};

use crate::event::{Actor, AuditEvent, DetailValue, Outcome};

pub const VERSION: u8 = 1;

/// An event with its place in the log: what the chain covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEvent {
    pub seq: u64,
    pub recorded_at: DateTime<Utc>,
    pub event: AuditEvent,
}

struct Writer(Vec<u8>);

impl Writer {
    fn str(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                write(self, v);
            }
        }
    }

    fn uuid(&mut self, id: uuid::Uuid) {
        self.0.extend_from_slice(id.as_bytes());
    }
}

/// The canonical encoding of `sealed`.
pub fn encode(sealed: &SealedEvent) -> Vec<u8> {
    let e = &sealed.event;
    let mut w = Writer(Vec::with_capacity(256));
    w.0.push(VERSION);
    w.0.extend_from_slice(&sealed.seq.to_be_bytes());
    w.0.extend_from_slice(&sealed.recorded_at.timestamp_micros().to_be_bytes());
    w.str(e.actor.kind());
    w.opt(e.actor.id(), Writer::uuid);
    let role = match &e.actor {
        Actor::User { role, .. } => Some(role.as_str()),
        Actor::System { component } => Some(component.as_str()),
        Actor::Anonymous => None,
    };
    w.opt(role, Writer::str);
    w.str(e.action.as_str());
    w.str(e.resource_type.as_str());
    w.opt(e.resource_id, Writer::uuid);
    w.opt(e.patient_id, Writer::uuid);
    match &e.outcome {
        Outcome::Success => {
            w.str("success");
            w.opt(None::<&str>, Writer::str);
        }
        Outcome::Failure(reason) => {
            w.str("failure");
            w.opt(Some(reason.as_str()), Writer::str);
        }
    }
    w.str(e.purpose.as_str());
    w.opt(e.request_id.as_deref(), Writer::str);
    w.opt(e.client_ip.map(|ip| ip.to_string()).as_deref(), Writer::str);
    w.opt(e.user_agent.as_deref(), Writer::str);
    w.0.extend_from_slice(&(e.details.len() as u32).to_be_bytes());
    for (key, value) in &e.details {
        w.str(key.as_str());
        match value {
            DetailValue::Id(id) => {
                w.0.push(1);
                w.uuid(*id);
            }
            DetailValue::Code(code) => {
                w.0.push(2);
                w.str(code.as_str());
            }
            DetailValue::Count(n) => {
                w.0.push(3);
                w.0.extend_from_slice(&n.to_be_bytes());
            }
        }
    }
    w.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Code, action, purpose, resource};

    fn sample() -> SealedEvent {
        SealedEvent {
            seq: 7,
            recorded_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            event: AuditEvent::new(
                Actor::User {
                    id: uuid::Uuid::from_u128(1),
                    role: Code::new("provider"),
                },
                action::READ,
                resource::PATIENT,
                purpose::TREATMENT,
            )
            .patient(uuid::Uuid::from_u128(2))
            .detail(Code::new("fields"), DetailValue::Code(Code::new("demographics"))),
        }
    }

    #[test]
    fn the_encoding_is_deterministic_and_versioned() {
        let a = encode(&sample());
        assert_eq!(a, encode(&sample()));
        assert_eq!(a[0], VERSION);
        assert_eq!(&a[1..9], &7u64.to_be_bytes());
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_encoding() {
        // Length prefixes keep "ab"+"c" apart from "a"+"bc".
        let mut one = sample();
        one.event.action = Code::new("ab");
        one.event.resource_type = Code::new("c");
        let mut two = sample();
        two.event.action = Code::new("a");
        two.event.resource_type = Code::new("bc");
        assert_ne!(encode(&one), encode(&two));
    }

    #[test]
    fn an_absent_field_differs_from_an_empty_one() {
        let mut absent = sample();
        absent.event.user_agent = None;
        let mut empty = sample();
        empty.event.user_agent = Some(String::new());
        assert_ne!(encode(&absent), encode(&empty));
    }
}
