//! The appointment state machine: FHIR R4 `Appointment.status`, one table of allowed
//! transitions and who may perform each. Nothing else decides a status change.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::context::Role;

/// FHIR R4 Appointment.status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Proposed,
    Pending,
    Booked,
    Arrived,
    Fulfilled,
    Cancelled,
    Noshow,
    EnteredInError,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Proposed,
        Status::Pending,
        Status::Booked,
        Status::Arrived,
        Status::Fulfilled,
        Status::Cancelled,
        Status::Noshow,
        Status::EnteredInError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Proposed => "proposed",
            Status::Pending => "pending",
            Status::Booked => "booked",
            Status::Arrived => "arrived",
            Status::Fulfilled => "fulfilled",
            Status::Cancelled => "cancelled",
            Status::Noshow => "noshow",
            Status::EnteredInError => "entered-in-error",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Whether the appointment keeps its time taken (the exclusion constraints' set).
    pub fn occupies_time(self) -> bool {
        matches!(self, Status::Pending | Status::Booked | Status::Arrived)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What someone asks to do to an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A held slot (pending) or a proposal becomes booked.
    Confirm,
    Cancel,
    CheckIn,
    NoShow,
    Complete,
    /// Undo a record made by mistake.
    EnteredInError,
}

impl Transition {
    pub const ALL: [Transition; 6] = [
        Transition::Confirm,
        Transition::Cancel,
        Transition::CheckIn,
        Transition::NoShow,
        Transition::Complete,
        Transition::EnteredInError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Confirm => "confirm",
            Transition::Cancel => "cancel",
            Transition::CheckIn => "check_in",
            Transition::NoShow => "no_show",
            Transition::Complete => "complete",
            Transition::EnteredInError => "entered_in_error",
        }
    }
}

/// Who may perform a transition (ownership is checked separately: a patient only on
/// their own appointments, a provider only on theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub patient: bool,
    pub provider: bool,
    pub admin: bool,
}

const ANYONE: Allowed = Allowed {
    patient: true,
    provider: true,
    admin: true,
};
const STAFF: Allowed = Allowed {
    patient: false,
    provider: true,
    admin: true,
};
const ADMIN: Allowed = Allowed {
    patient: false,
    provider: false,
    admin: true,
};

/// The whole table: from, transition, to, who.
pub const TRANSITIONS: &[(Status, Transition, Status, Allowed)] = &[
    (Status::Proposed, Transition::Confirm, Status::Booked, ANYONE),
    (Status::Proposed, Transition::Cancel, Status::Cancelled, ANYONE),
    (Status::Pending, Transition::Confirm, Status::Booked, ANYONE),
    (Status::Pending, Transition::Cancel, Status::Cancelled, ANYONE),
    // Patients cancel within the type's cutoff only; staff may override it.
    (Status::Booked, Transition::Cancel, Status::Cancelled, ANYONE),
    // Patients check themselves in (the video consultation does it when they join).
    (Status::Booked, Transition::CheckIn, Status::Arrived, ANYONE),
    (Status::Booked, Transition::NoShow, Status::Noshow, STAFF),
    (Status::Arrived, Transition::Complete, Status::Fulfilled, STAFF),
    (Status::Arrived, Transition::Cancel, Status::Cancelled, STAFF),
    (
        Status::Proposed,
        Transition::EnteredInError,
        Status::EnteredInError,
        ADMIN,
    ),
    (
        Status::Pending,
        Transition::EnteredInError,
        Status::EnteredInError,
        ADMIN,
    ),
    (
        Status::Booked,
        Transition::EnteredInError,
        Status::EnteredInError,
        ADMIN,
    ),
    (
        Status::Arrived,
        Transition::EnteredInError,
        Status::EnteredInError,
        ADMIN,
    ),
    (
        Status::Fulfilled,
        Transition::EnteredInError,
        Status::EnteredInError,
        ADMIN,
    ),
    (
        Status::Cancelled,
        Transition::EnteredInError,
        Status::EnteredInError,
        ADMIN,
    ),
    (
        Status::Noshow,
        Transition::EnteredInError,
        Status::EnteredInError,
        ADMIN,
    ),
];

/// Why a transition is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not possible from the current status (409, naming the status).
    NotFromStatus(Status),
    /// Possible, but not for this role (403).
    NotForRole(Role),
}

/// The status a transition leads to, if `role` may perform it from `from`.
pub fn apply(from: Status, transition: Transition, role: Role) -> Result<Status, Refusal> {
    let (_, _, to, allowed) = TRANSITIONS
        .iter()
        .find(|(f, t, _, _)| *f == from && *t == transition)
        .ok_or(Refusal::NotFromStatus(from))?;
    let ok = match role {
        Role::Patient => allowed.patient,
        Role::Provider => allowed.provider,
        Role::Admin => allowed.admin,
    };
    if ok {
        Ok(*to)
    } else {
        Err(Refusal::NotForRole(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [Role; 3] = [Role::Patient, Role::Provider, Role::Admin];

    /// Every (status, transition, role) triple, checked against the table written out
    /// by hand a second time, so a change to either shows.
    #[test]
    fn every_transition_for_every_role_is_as_specified() {
        use Status::{Arrived, Booked, Cancelled, Fulfilled, Noshow, Pending, Proposed};
        use Transition::{Cancel, CheckIn, Complete, Confirm, NoShow};
        let expected = |from: Status, t: Transition, role: Role| -> Option<Status> {
            let staff = role != Role::Patient;
            let admin = role == Role::Admin;
            match (from, t) {
                (Proposed | Pending, Confirm) => Some(Booked),
                (Proposed | Pending | Booked, Cancel) => Some(Cancelled),
                (Booked, CheckIn) => Some(Arrived),
                (Booked, NoShow) if staff => Some(Noshow),
                (Arrived, Complete) if staff => Some(Fulfilled),
                (Arrived, Cancel) if staff => Some(Cancelled),
                (Status::EnteredInError, _) => None,
                (_, Transition::EnteredInError) if admin => Some(Status::EnteredInError),
                _ => None,
            }
        };
        for from in Status::ALL {
            for t in Transition::ALL {
                for role in ROLES {
                    let got = apply(from, t, role).ok();
                    assert_eq!(
                        got,
                        expected(from, t, role),
                        "{from} --{}--> as {role}",
                        t.as_str()
                    );
                }
            }
        }
    }

    #[test]
    fn terminal_statuses_accept_nothing_but_an_admin_correction() {
        for from in [Status::Fulfilled, Status::Cancelled, Status::Noshow] {
            for t in [
                Transition::Confirm,
                Transition::Cancel,
                Transition::CheckIn,
                Transition::Complete,
            ] {
                assert_eq!(apply(from, t, Role::Admin), Err(Refusal::NotFromStatus(from)));
            }
        }
        assert!(apply(Status::EnteredInError, Transition::EnteredInError, Role::Admin).is_err());
    }

    #[test]
    fn a_patient_cannot_mark_themselves_fulfilled_or_a_no_show() {
        assert_eq!(
            apply(Status::Arrived, Transition::Complete, Role::Patient),
            Err(Refusal::NotForRole(Role::Patient))
        );
        assert_eq!(
            apply(Status::Booked, Transition::NoShow, Role::Patient),
            Err(Refusal::NotForRole(Role::Patient))
        );
    }

    #[test]
    fn only_the_occupying_statuses_hold_time() {
        let occupying: Vec<Status> = Status::ALL.into_iter().filter(|s| s.occupies_time()).collect();
        assert_eq!(occupying, vec![Status::Pending, Status::Booked, Status::Arrived]);
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
