//! What a connection may follow, and how each event looks on each topic.
//!
//! Topics:
//! - `notifications`: the caller's own notifications (always on).
//! - `appointments`: the caller's own appointments: a patient's, or a provider's
//!   calendar (always on; full event payloads: ids, statuses, times).
//! - `provider:{id}:slots`: a provider's free/busy changes; anyone signed in may
//!   follow it, so it carries times only, never who booked.
//! - `provider:{id}:queue`: check-ins for that provider's appointments (the waiting
//!   room); that provider only.
//!
//! Routing is by [`Key`]: each connection listens on its keys, each event names the
//! keys it concerns. A connection gets one message per event, with the most detailed
//! view any of its matching topics allows and every matching topic listed.

use serde_json::{Value, json};
use uuid::Uuid;

use super::stream::StreamEvent;
use crate::context::Role;
use crate::outbox::kind;

/// A topic a client can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Notifications,
    Appointments,
    ProviderSlots(Uuid),
    ProviderQueue(Uuid),
}

impl Topic {
    pub fn parse(name: &str) -> Option<Topic> {
        match name {
            "notifications" => return Some(Topic::Notifications),
            "appointments" => return Some(Topic::Appointments),
            _ => {}
        }
        let rest = name.strip_prefix("provider:")?;
        let (id, what) = rest.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match what {
            "slots" => Some(Topic::ProviderSlots(id)),
            "queue" => Some(Topic::ProviderQueue(id)),
            _ => None,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Topic::Notifications => "notifications".into(),
            Topic::Appointments => "appointments".into(),
            Topic::ProviderSlots(id) => format!("provider:{id}:slots"),
            Topic::ProviderQueue(id) => format!("provider:{id}:queue"),
        }
    }

    /// The routing key a subscription to this topic adds (the always-on topics are
    /// covered by the identity's own keys).
    pub fn key(&self) -> Option<Key> {
        match self {
            Topic::ProviderSlots(id) => Some(Key::Slots(*id)),
            Topic::ProviderQueue(id) => Some(Key::Queue(*id)),
            Topic::Notifications | Topic::Appointments => None,
        }
    }
}

/// Who is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub account_id: Uuid,
    pub role: Role,
    pub session_id: Uuid,
    /// The caller's own patient record, if they have one.
    pub patient_id: Option<Uuid>,
}

impl Identity {
    /// The connection's caller, for access checks and audit events.
    pub fn caller(&self) -> crate::context::Caller {
        crate::context::Caller {
            account_id: self.account_id,
            role: self.role,
            session_id: self.session_id,
        }
    }

    /// The keys every connection of this identity listens on.
    pub fn own_keys(&self) -> Vec<Key> {
        let mut keys = vec![Key::Account(self.account_id)];
        if let Some(patient) = self.patient_id {
            keys.push(Key::Patient(patient));
        }
        keys
    }
}

/// Why a subscription is refused (the code clients see).
pub const FORBIDDEN_TOPIC: &str = "forbidden_topic";

/// Whether `who` may follow `topic`.
pub fn authorize(topic: Topic, who: &Identity) -> Result<(), &'static str> {
    match topic {
        Topic::Notifications | Topic::Appointments | Topic::ProviderSlots(_) => Ok(()),
        Topic::ProviderQueue(provider) if who.role == Role::Provider && provider == who.account_id => Ok(()),
        Topic::ProviderQueue(_) => Err(FORBIDDEN_TOPIC),
    }
}

/// A routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// An account: its notifications and session events, and a provider's own
    /// appointments (a provider's id is their account id).
    Account(Uuid),
    /// A patient record's appointments.
    Patient(Uuid),
    Slots(Uuid),
    Queue(Uuid),
}

/// How much of an event a topic shows, least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum View {
    /// Times only (public free/busy).
    Slots,
    /// The waiting room: appointment, patient, status, times.
    Queue,
    /// Everything in the payload (ids, statuses, times).
    Full,
}

/// What an event means for the connections that hear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Deliver it.
    Deliver,
    /// Close this account's sockets (all, or those of one session).
    Close {
        session: Option<Uuid>,
        code: u16,
        reason: &'static str,
    },
}

/// Close codes the gateway uses beyond the standard ones.
pub mod close {
    pub const SESSION_ENDED: u16 = 4401;
    pub const ACCOUNT_DISABLED: u16 = 4403;
}

/// The keys an event concerns, each with the topic and view it is delivered under.
pub fn route(event: &StreamEvent) -> Vec<(Key, Topic, View)> {
    let mut out = Vec::new();
    match event.kind.as_str() {
        kind::NOTIFICATION => {
            if let Some(account) = event.account_id {
                out.push((Key::Account(account), Topic::Notifications, View::Full));
            }
        }
        kind::APPOINTMENT_BOOKED
        | kind::APPOINTMENT_RESCHEDULED
        | kind::APPOINTMENT_CANCELLED
        | kind::APPOINTMENT_STATUS_CHANGED
        | kind::APPOINTMENT_ACCEPTED
        | kind::SLOT_HELD
        | kind::SLOT_RELEASED => {
            if let Some(patient) = event.patient_id {
                out.push((Key::Patient(patient), Topic::Appointments, View::Full));
            }
            if let Some(provider) = event.provider_id {
                out.push((Key::Account(provider), Topic::Appointments, View::Full));
                if changes_free_busy(&event.kind) {
                    out.push((Key::Slots(provider), Topic::ProviderSlots(provider), View::Slots));
                }
                if matches!(
                    event.kind.as_str(),
                    kind::APPOINTMENT_STATUS_CHANGED | kind::APPOINTMENT_CANCELLED
                ) {
                    out.push((Key::Queue(provider), Topic::ProviderQueue(provider), View::Queue));
                }
            }
        }
        kind::AVAILABILITY_CHANGED => {
            if let Some(provider) = event.provider_id {
                out.push((Key::Slots(provider), Topic::ProviderSlots(provider), View::Slots));
            }
        }
        _ => {}
    }
    out
}

/// Which kinds take or free time on a provider's calendar.
fn changes_free_busy(kind: &str) -> bool {
    matches!(
        kind,
        kind::SLOT_HELD | kind::SLOT_RELEASED | kind::APPOINTMENT_BOOKED | kind::APPOINTMENT_RESCHEDULED
    )
}

/// Control events: what they do to the sockets of `event.account_id`.
pub fn control(event: &StreamEvent) -> Option<(Uuid, Effect)> {
    let account = event.account_id?;
    match event.kind.as_str() {
        kind::SESSION_ENDED => Some((
            account,
            Effect::Close {
                session: event
                    .payload
                    .get("session_id")
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::parse_str(s).ok()),
                code: close::SESSION_ENDED,
                reason: "session ended",
            },
        )),
        kind::ACCOUNT_DISABLED => Some((
            account,
            Effect::Close {
                session: None,
                code: close::ACCOUNT_DISABLED,
                reason: "account disabled",
            },
        )),
        _ => None,
    }
}

/// The event's data as shown under `view`.
pub fn render(event: &StreamEvent, view: View) -> Value {
    let p = &event.payload;
    match view {
        View::Full => p.clone(),
        View::Queue => json!({
            "appointment_id": p.get("appointment_id"),
            "patient_id": p.get("patient_id"),
            "status": p.get("status"),
            "previous_status": p.get("previous_status"),
            "starts_at": p.get("starts_at"),
            "ends_at": p.get("ends_at"),
        }),
        View::Slots => {
            if event.kind == kind::AVAILABILITY_CHANGED {
                return json!({ "provider_id": event.provider_id, "refresh": true });
            }
            let mut data = json!({
                "provider_id": event.provider_id,
                "starts_at": p.get("starts_at"),
                "ends_at": p.get("ends_at"),
                "busy": event.kind != kind::SLOT_RELEASED,
            });
            if event.kind == kind::APPOINTMENT_RESCHEDULED {
                data["previous"] =
                    json!({ "starts_at": p.get("previous_starts_at"), "ends_at": p.get("previous_ends_at") });
            }
            data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> StreamEvent {
        StreamEvent {
            seq: 1,
            kind: kind.into(),
            provider_id: Some(Uuid::from_u128(1)),
            patient_id: Some(Uuid::from_u128(2)),
            appointment_id: Some(Uuid::from_u128(3)),
            account_id: None,
            payload: json!({ "appointment_id": Uuid::from_u128(3), "patient_id": Uuid::from_u128(2),
                             "starts_at": "2026-01-01T10:00:00Z", "ends_at": "2026-01-01T10:30:00Z", "status": "booked" }),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn an_accepted_booking_reaches_its_patient_and_provider_but_not_the_public_slots() {
        let routed = route(&event(kind::APPOINTMENT_ACCEPTED));
        let keys: Vec<(Key, Topic)> = routed.iter().map(|(k, t, _)| (*k, *t)).collect();
        assert_eq!(
            keys,
            vec![
                (Key::Patient(Uuid::from_u128(2)), Topic::Appointments),
                (Key::Account(Uuid::from_u128(1)), Topic::Appointments),
            ]
        );
    }

    #[test]
    fn topics_round_trip_and_junk_is_refused() {
        let id = Uuid::from_u128(7);
        for topic in [
            Topic::Notifications,
            Topic::Appointments,
            Topic::ProviderSlots(id),
            Topic::ProviderQueue(id),
        ] {
            assert_eq!(Topic::parse(&topic.name()), Some(topic));
        }
        for junk in [
            "",
            "provider:",
            "provider:x:slots",
            &format!("provider:{id}:notes"),
            "patients",
        ] {
            assert_eq!(Topic::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn only_the_provider_may_watch_their_queue_but_anyone_their_slots() {
        let provider = Uuid::from_u128(1);
        let me = |role, account_id| Identity {
            account_id,
            role,
            session_id: Uuid::nil(),
            patient_id: None,
        };
        assert!(authorize(Topic::ProviderQueue(provider), &me(Role::Provider, provider)).is_ok());
        assert!(
            authorize(
                Topic::ProviderQueue(provider),
                &me(Role::Provider, Uuid::from_u128(9))
            )
            .is_err()
        );
        assert!(
            authorize(
                Topic::ProviderQueue(provider),
                &me(Role::Patient, Uuid::from_u128(9))
            )
            .is_err()
        );
        assert!(
            authorize(
                Topic::ProviderQueue(provider),
                &me(Role::Admin, Uuid::from_u128(9))
            )
            .is_err()
        );
        assert!(
            authorize(
                Topic::ProviderSlots(provider),
                &me(Role::Patient, Uuid::from_u128(9))
            )
            .is_ok()
        );
    }

    #[test]
    fn the_public_slots_view_never_names_the_patient_or_the_appointment() {
        for kind in [
            kind::SLOT_HELD,
            kind::SLOT_RELEASED,
            kind::APPOINTMENT_BOOKED,
            kind::APPOINTMENT_RESCHEDULED,
        ] {
            let e = event(kind);
            let routes = route(&e);
            assert!(routes.contains(&(
                Key::Slots(Uuid::from_u128(1)),
                Topic::ProviderSlots(Uuid::from_u128(1)),
                View::Slots
            )));
            let shown = render(&e, View::Slots).to_string();
            assert!(!shown.contains(&Uuid::from_u128(2).to_string()), "{shown}");
            assert!(!shown.contains(&Uuid::from_u128(3).to_string()), "{shown}");
        }
        assert_eq!(render(&event(kind::SLOT_RELEASED), View::Slots)["busy"], false);
    }

    #[test]
    fn an_appointment_event_reaches_its_patient_its_provider_and_no_one_else() {
        let keys: Vec<Key> = route(&event(kind::APPOINTMENT_CANCELLED))
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        assert!(keys.contains(&Key::Patient(Uuid::from_u128(2))));
        assert!(keys.contains(&Key::Account(Uuid::from_u128(1))));
        assert!(
            !keys.iter().any(|k| matches!(k, Key::Slots(_))),
            "a cancellation frees time through slot.released"
        );
    }
}
