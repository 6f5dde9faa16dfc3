//! Who may enter an appointment's consultation room, and when: decided before a
//! connection reaches the room, from the appointment as stored.
//!
//! Pure: the caller loads the appointment and reads the clock.

use carewire_signaling::{Claim, ErrorCode, Rejection};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::Window;
use crate::context::Role;
use crate::scheduling::status::Status;

/// The appointment, as far as admission cares.
#[derive(Debug, Clone, Copy)]
pub struct Appointment<'a> {
    pub provider_id: Uuid,
    /// The patient's account, when the patient has one.
    pub patient_account: Option<Uuid>,
    pub modality: &'a str,
    pub status: Status,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// Who is knocking.
#[derive(Debug, Clone)]
pub enum Knock {
    Account { id: Uuid, role: Role },
    Guest { token: String },
}

/// Why the door stays shut, with the reason code for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rejection: Rejection,
    pub audit_reason: &'static str,
}

fn refuse(code: ErrorCode, message: &'static str, audit_reason: &'static str) -> Refusal {
    Refusal {
        rejection: Rejection::new(code, message),
        audit_reason,
    }
}

/// The seat claim for `knock`, or why not. A missing appointment and someone else's
/// look the same (`UNAUTHORIZED`), so the answer does not reveal which ids exist.
pub fn admit(
    knock: Knock,
    appointment: Option<&Appointment<'_>>,
    window: Window,
    now: DateTime<Utc>,
) -> Result<Claim, Refusal> {
    let not_yours = || {
        refuse(
            ErrorCode::Unauthorized,
            "this is not your consultation",
            "not_a_participant",
        )
    };
    let Some(a) = appointment else {
        return Err(not_yours());
    };
    let claim = match knock {
        Knock::Account {
            id,
            role: Role::Provider,
        } if id == a.provider_id => Claim::Provider { account: id },
        Knock::Account {
            id,
            role: Role::Patient,
        } if a.patient_account == Some(id) => Claim::Patient { account: id },
        Knock::Account { .. } => return Err(not_yours()),
        // The room checks the token itself (its key signs guest links).
        Knock::Guest { token } => Claim::Guest { token },
    };
    if a.modality != "video" {
        return Err(refuse(
            ErrorCode::StateMismatch,
            "this appointment is not a video consultation",
            "not_video",
        ));
    }
    if !matches!(a.status, Status::Booked | Status::Arrived) {
        return Err(refuse(
            ErrorCode::StateMismatch,
            "this appointment is not booked (cancelled, over, or not yet confirmed)",
            "not_booked",
        ));
    }
    let (opens, closes) = window.around(a.starts_at, a.ends_at);
    if now < opens || now > closes {
        return Err(refuse(
            ErrorCode::NotInWindow,
            "the consultation room is open from shortly before the start until shortly after the end",
            "not_in_window",
        ));
    }
    Ok(claim)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const PROVIDER: Uuid = Uuid::from_u128(1);
    const PATIENT: Uuid = Uuid::from_u128(2);

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default()
            + chrono::Duration::minutes(minutes)
    }

    fn appointment(status: Status, modality: &str) -> Appointment<'_> {
        Appointment {
            provider_id: PROVIDER,
            patient_account: Some(PATIENT),
            modality,
            status,
            starts_at: at(0),
            ends_at: at(30),
        }
    }

    const WINDOW: Window = Window {
        opens_before: Duration::from_secs(15 * 60),
        closes_after: Duration::from_secs(30 * 60),
    };

    fn patient() -> Knock {
        Knock::Account {
            id: PATIENT,
            role: Role::Patient,
        }
    }

    fn code(result: Result<Claim, Refusal>) -> Option<ErrorCode> {
        result.err().map(|r| r.rejection.code)
    }

    #[test]
    fn the_window_runs_from_fifteen_minutes_before_to_thirty_after_the_end() {
        let a = appointment(Status::Booked, "video");
        assert_eq!(
            code(admit(patient(), Some(&a), WINDOW, at(-16))),
            Some(ErrorCode::NotInWindow)
        );
        assert_eq!(code(admit(patient(), Some(&a), WINDOW, at(-15))), None);
        assert_eq!(code(admit(patient(), Some(&a), WINDOW, at(60))), None);
        assert_eq!(
            code(admit(patient(), Some(&a), WINDOW, at(61))),
            Some(ErrorCode::NotInWindow)
        );
    }

    #[test]
    fn seats_follow_the_appointment_and_strangers_are_refused() {
        let a = appointment(Status::Booked, "video");
        let provider = Knock::Account {
            id: PROVIDER,
            role: Role::Provider,
        };
        assert_eq!(
            admit(provider, Some(&a), WINDOW, at(0)).ok(),
            Some(Claim::Provider { account: PROVIDER })
        );
        assert_eq!(
            admit(patient(), Some(&a), WINDOW, at(0)).ok(),
            Some(Claim::Patient { account: PATIENT })
        );
        for stranger in [
            Knock::Account {
                id: Uuid::from_u128(9),
                role: Role::Patient,
            },
            Knock::Account {
                id: Uuid::from_u128(9),
                role: Role::Provider,
            },
            // A patient's id with the provider role is not the provider.
            Knock::Account {
                id: PATIENT,
                role: Role::Provider,
            },
            Knock::Account {
                id: PROVIDER,
                role: Role::Admin,
            },
        ] {
            assert_eq!(
                code(admit(stranger, Some(&a), WINDOW, at(0))),
                Some(ErrorCode::Unauthorized)
            );
        }
        assert_eq!(
            code(admit(patient(), None, WINDOW, at(0))),
            Some(ErrorCode::Unauthorized)
        );
    }

    #[test]
    fn only_booked_video_appointments_have_a_room() {
        for status in [Status::Booked, Status::Arrived] {
            assert_eq!(
                code(admit(
                    patient(),
                    Some(&appointment(status, "video")),
                    WINDOW,
                    at(0)
                )),
                None
            );
        }
        for status in [
            Status::Cancelled,
            Status::Fulfilled,
            Status::Pending,
            Status::Noshow,
        ] {
            assert_eq!(
                code(admit(
                    patient(),
                    Some(&appointment(status, "video")),
                    WINDOW,
                    at(0)
                )),
                Some(ErrorCode::StateMismatch)
            );
        }
        assert_eq!(
            code(admit(
                patient(),
                Some(&appointment(Status::Booked, "in_person")),
                WINDOW,
                at(0)
            )),
            Some(ErrorCode::StateMismatch)
        );
    }
}
