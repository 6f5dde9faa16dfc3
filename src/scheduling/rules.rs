//! Every rule about changing an appointment, as pure functions over facts already
//! loaded and `now` from the server's clock: who stands where to an appointment, who
//! may book for whom, which transition is allowed now (the state machine in
//! [`status`](super::status) plus the timing rules: lapsed holds, no-shows before the
//! start, check-ins after the end, the patient's cancellation cutoff), and when an
//! appointment may be moved. Handlers load the facts, ask here, and write the answer.
//!
//! A refusal is typed; [`Refusal::audited`] says which ones are denials of access (to
//! be audited before answering) rather than conflicts with the appointment's state.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::status::{self, Status, Transition};
use crate::context::{Caller, Role};
use crate::error::Error;

/// How the caller stands to an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    OwnPatient,
    OwnProvider,
    Admin,
    Stranger,
}

impl Standing {
    /// `patient_account` is the account of the appointment's patient, if it has one
    /// (only looked at for patients).
    pub fn of(caller: &Caller, provider_id: Uuid, patient_account: Option<Uuid>) -> Standing {
        match caller.role {
            Role::Admin => Standing::Admin,
            Role::Provider if provider_id == caller.account_id => Standing::OwnProvider,
            Role::Patient if patient_account == Some(caller.account_id) => Standing::OwnPatient,
            _ => Standing::Stranger,
        }
    }
}

/// What a rule needs to know about an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub status: Status,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// The appointment type's cancellation cutoff: patients may not cancel or move it
    /// later than this before the start.
    pub cancellation_cutoff_minutes: i32,
}

/// Why a request about an appointment is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not the caller's appointment: answered as if it did not exist (404), audited.
    Hidden,
    /// The caller's role may not do this transition (403), audited.
    NotForRole,
    /// A provider books on their own calendar only (403), audited.
    NotOwnCalendar,
    /// The state machine does not allow it from this status (409).
    NotFromStatus { transition: Transition, status: Status },
    /// Only held and booked appointments can be moved (409).
    NotReschedulable(Status),
    /// A cancelled (or otherwise ended without a visit) booking cannot be accepted (409).
    NotAcceptable { status: Status },
    /// The patient already holds as many slots as they may (409).
    TooManyHolds { limit: i64 },
    /// The patient already has as many future appointments as they may (409).
    TooManyAppointments { limit: i64 },
    /// The hold lapsed before it was confirmed (409).
    HoldExpired,
    /// A no-show is marked after the start only (409).
    NotStarted,
    /// A check-in after the end (409).
    AlreadyOver,
    /// A patient asked within the type's cancellation cutoff (409).
    Cutoff { minutes: i32 },
    /// A patient books only once they have a patient record (409).
    NoPatientRecord,
    /// A patient named someone else as the patient (422).
    ForSelfOnly,
    /// Staff must name the patient (422).
    PatientRequired,
}

impl Refusal {
    /// Whether this is a denial of access, recorded in the audit log, rather than a
    /// conflict with the appointment's state or bad input.
    pub fn audited(self) -> bool {
        matches!(
            self,
            Refusal::Hidden | Refusal::NotForRole | Refusal::NotOwnCalendar
        )
    }

    /// The code audit events and problem documents name.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Hidden => "not_own_appointment",
            Refusal::NotForRole => "not_allowed_for_role",
            Refusal::NotOwnCalendar => "not_own_calendar",
            Refusal::NotFromStatus { .. } | Refusal::NotReschedulable(_) | Refusal::NotAcceptable { .. } => {
                "invalid_transition"
            }
            Refusal::HoldExpired => "hold_expired",
            Refusal::NotStarted => "not_started",
            Refusal::AlreadyOver => "already_over",
            Refusal::Cutoff { .. } => "cancellation_cutoff",
            Refusal::NoPatientRecord => "no_patient_record",
            Refusal::TooManyHolds { .. } => "too_many_holds",
            Refusal::TooManyAppointments { .. } => "too_many_appointments",
            Refusal::ForSelfOnly | Refusal::PatientRequired => "patient_id",
        }
    }

    /// The answer the caller gets.
    pub fn error(self) -> Error {
        match self {
            Refusal::Hidden => Error::NotFound,
            Refusal::NotForRole => Error::Refused {
                code: self.code().to_owned(),
                detail: "You are not allowed to do this to this appointment.".into(),
            },
            Refusal::NotOwnCalendar => Error::Refused {
                code: self.code().to_owned(),
                detail: "Providers book on their own calendar.".into(),
            },
            Refusal::NotFromStatus { transition, status } => Error::conflict(
                self.code(),
                format!(
                    "cannot {} an appointment that is {status}",
                    transition.as_str().replace('_', " ")
                ),
            ),
            Refusal::NotReschedulable(status) => Error::conflict(
                self.code(),
                format!("cannot reschedule an appointment that is {status}"),
            ),
            Refusal::NotAcceptable { status } => Error::conflict(
                self.code(),
                format!("cannot accept an appointment that is {status}"),
            ),
            Refusal::HoldExpired => Error::conflict(self.code(), "the hold lapsed; book again"),
            Refusal::NotStarted => Error::conflict(self.code(), "a no-show is marked after the start time"),
            Refusal::AlreadyOver => Error::conflict(self.code(), "the appointment is over"),
            Refusal::Cutoff { minutes } => Error::conflict(
                self.code(),
                format!(
                    "patients can change this appointment until {minutes} minutes before it starts; contact the clinic"
                ),
            ),
            Refusal::NoPatientRecord => Error::conflict(
                self.code(),
                "create your patient record (POST /v1/patients) before booking",
            ),
            Refusal::TooManyHolds { limit } => Error::conflict(
                self.code(),
                format!("you already hold {limit} slot(s): confirm or cancel one first"),
            ),
            Refusal::TooManyAppointments { limit } => Error::conflict(
                self.code(),
                format!("you already have {limit} upcoming appointment(s): cancel one or contact the clinic"),
            ),
            Refusal::ForSelfOnly => Error::validation("patient_id", "patients book for themselves"),
            Refusal::PatientRequired => Error::validation("patient_id", "is required"),
        }
    }
}

/// The patient a booking is for. A patient books for themselves (`own_record` is
/// their patient record, if they have made one); providers on their own calendar and
/// admins on any, naming the patient (whether it exists, the foreign key answers).
pub fn booking_patient(
    caller: &Caller,
    provider_id: Uuid,
    own_record: Option<Uuid>,
    requested: Option<Uuid>,
) -> Result<Uuid, Refusal> {
    match caller.role {
        Role::Patient => {
            let own = own_record.ok_or(Refusal::NoPatientRecord)?;
            if requested.is_some_and(|p| p != own) {
                return Err(Refusal::ForSelfOnly);
            }
            Ok(own)
        }
        Role::Provider if provider_id != caller.account_id => Err(Refusal::NotOwnCalendar),
        Role::Provider | Role::Admin => requested.ok_or(Refusal::PatientRequired),
    }
}

/// Whether a booking gives its provider a care relationship with the patient, and so
/// their record: unless a provider booked a patient they had no relationship with.
/// A booking is not a key to the record; such a booking opens it only once the
/// patient accepts it ([`accept_booking`]). Break-glass stays the way in for an
/// emergency.
pub fn opens_record(booked_by: Role, had_relationship: bool) -> bool {
    booked_by != Role::Provider || had_relationship
}

/// What a patient already has ahead of them, for [`within_limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Upcoming {
    /// Live holds (pending, not lapsed).
    pub holds: i64,
    /// Future appointments, held or booked.
    pub appointments: i64,
}

/// Whether a patient booking for themselves may take one more: a hold when `hold`,
/// else a booking. Staff bookings are not limited (the caller decides that).
pub fn within_limits(
    upcoming: Upcoming,
    hold: bool,
    max_holds: i64,
    max_appointments: i64,
) -> Result<(), Refusal> {
    if hold && upcoming.holds >= max_holds {
        return Err(Refusal::TooManyHolds { limit: max_holds });
    }
    if upcoming.appointments >= max_appointments {
        return Err(Refusal::TooManyAppointments {
            limit: max_appointments,
        });
    }
    Ok(())
}

/// Whether the patient may accept this booking now: their own appointment, still
/// live or done (accepting a cancelled one would open the record for nothing).
pub fn accept_booking(facts: &Facts, role: Role) -> Result<(), Refusal> {
    if role != Role::Patient {
        return Err(Refusal::NotForRole);
    }
    match facts.status {
        Status::Proposed | Status::Pending | Status::Booked | Status::Arrived | Status::Fulfilled => Ok(()),
        status => Err(Refusal::NotAcceptable { status }),
    }
}

/// The status `transition` leads to, if `role` may do it to this appointment now.
/// The state machine answers first; then the timing rules.
pub fn transition(
    facts: &Facts,
    transition: Transition,
    role: Role,
    now: DateTime<Utc>,
) -> Result<Status, Refusal> {
    let to = status::apply(facts.status, transition, role).map_err(|refusal| match refusal {
        status::Refusal::NotFromStatus(status) => Refusal::NotFromStatus { transition, status },
        status::Refusal::NotForRole(_) => Refusal::NotForRole,
    })?;
    match transition {
        Transition::Confirm
            if facts.status == Status::Pending && facts.hold_expires_at.is_some_and(|t| t <= now) =>
        {
            Err(Refusal::HoldExpired)
        }
        Transition::NoShow if now < facts.starts_at => Err(Refusal::NotStarted),
        Transition::CheckIn if now >= facts.ends_at => Err(Refusal::AlreadyOver),
        // Cancelling a hold or a proposal gives up nothing the clinic planned on.
        Transition::Cancel if facts.status == Status::Booked => within_cutoff(facts, role, now).map(|()| to),
        _ => Ok(to),
    }
}

/// Whether `role` may move this appointment now: held and booked ones only, and a
/// patient not within the cutoff.
pub fn reschedule(facts: &Facts, role: Role, now: DateTime<Utc>) -> Result<(), Refusal> {
    if !matches!(facts.status, Status::Pending | Status::Booked) {
        return Err(Refusal::NotReschedulable(facts.status));
    }
    within_cutoff(facts, role, now)
}

/// Patients may not change an appointment later than the cutoff before its start;
/// staff may.
fn within_cutoff(facts: &Facts, role: Role, now: DateTime<Utc>) -> Result<(), Refusal> {
    let cutoff = Duration::minutes(i64::from(facts.cancellation_cutoff_minutes));
    if role == Role::Patient && now > facts.starts_at - cutoff {
        return Err(Refusal::Cutoff {
            minutes: facts.cancellation_cutoff_minutes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use Refusal::{AlreadyOver, Cutoff, HoldExpired, NotForRole, NotFromStatus, NotStarted};
    use Status::{Arrived, Booked, Cancelled, Fulfilled, Noshow, Pending};
    use Transition::{Cancel, CheckIn, Complete, Confirm, NoShow};

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default() + Duration::minutes(minutes)
    }

    /// An appointment from minute 0 to minute 30, held until minute -60 if pending,
    /// with a 120-minute cutoff.
    fn facts(status: Status) -> Facts {
        Facts {
            status,
            starts_at: at(0),
            ends_at: at(30),
            hold_expires_at: (status == Pending).then(|| at(-60)),
            cancellation_cutoff_minutes: 120,
        }
    }

    fn caller(role: Role, account: u128) -> Caller {
        Caller {
            account_id: Uuid::from_u128(account),
            role,
            session_id: Uuid::nil(),
        }
    }

    #[test]
    fn a_patient_takes_one_more_hold_or_booking_only_below_the_limits() {
        let up = |holds, appointments| Upcoming { holds, appointments };
        // (holds, appointments, asking for a hold, verdict) with at most 2 holds, 5 in all.
        let table = [
            (0, 0, true, Ok(())),
            (1, 4, true, Ok(())),
            (2, 2, true, Err(Refusal::TooManyHolds { limit: 2 })),
            (2, 2, false, Ok(())),
            (0, 5, true, Err(Refusal::TooManyAppointments { limit: 5 })),
            (0, 5, false, Err(Refusal::TooManyAppointments { limit: 5 })),
            (1, 4, false, Ok(())),
        ];
        for (holds, appointments, hold, verdict) in table {
            assert_eq!(
                within_limits(up(holds, appointments), hold, 2, 5),
                verdict,
                "{holds} {appointments} {hold}"
            );
        }
    }

    #[test]
    fn only_a_provider_booking_a_stranger_leaves_the_record_closed_and_only_the_patient_accepts() {
        // Who booked, whether they already had a care relationship, whether it opens.
        let table = [
            (Role::Patient, false, true),
            (Role::Patient, true, true),
            (Role::Admin, false, true),
            (Role::Admin, true, true),
            (Role::Provider, true, true),
            (Role::Provider, false, false),
        ];
        for (role, had_relationship, opens) in table {
            assert_eq!(
                opens_record(role, had_relationship),
                opens,
                "{role} {had_relationship}"
            );
        }
        for status in Status::ALL {
            let live = !matches!(status, Cancelled | Noshow | Status::EnteredInError);
            let expected = if live {
                Ok(())
            } else {
                Err(Refusal::NotAcceptable { status })
            };
            assert_eq!(
                accept_booking(&facts(status), Role::Patient),
                expected,
                "{status}"
            );
            for staff in [Role::Provider, Role::Admin] {
                assert_eq!(
                    accept_booking(&facts(status), staff),
                    Err(NotForRole),
                    "{status} {staff}"
                );
            }
        }
    }

    /// From, transition, role, the minute it is asked (the start is minute 0), verdict.
    type TransitionCase = (Status, Transition, Role, i64, Result<Status, Refusal>);

    /// Caller, their own patient record, the patient they name, verdict.
    type BookingCase = (Caller, Option<Uuid>, Option<Uuid>, Result<Uuid, Refusal>);

    #[test]
    fn transitions_at_each_moment_for_each_role() {
        let p = Role::Patient;
        let s = Role::Provider;
        let a = Role::Admin;
        #[rustfmt::skip]
        let table: &[TransitionCase] = &[
            // A hold is confirmed before it lapses, not after.
            (Pending, Confirm, p, -61, Ok(Booked)),
            (Pending, Confirm, p, -60, Err(HoldExpired)),
            (Pending, Confirm, s, -10, Err(HoldExpired)),
            // A no-show is marked from the start on, by staff.
            (Booked, NoShow, s, -1, Err(NotStarted)),
            (Booked, NoShow, s, 0, Ok(Noshow)),
            (Booked, NoShow, p, 5, Err(NotForRole)),
            // Check-in until the end, by anyone who may see it.
            (Booked, CheckIn, p, 29, Ok(Arrived)),
            (Booked, CheckIn, a, 30, Err(AlreadyOver)),
            // A patient cancels a booking up to the cutoff; staff at any time.
            (Booked, Cancel, p, -120, Ok(Cancelled)),
            (Booked, Cancel, p, -119, Err(Cutoff { minutes: 120 })),
            (Booked, Cancel, s, -1, Ok(Cancelled)),
            (Booked, Cancel, a, 10, Ok(Cancelled)),
            // A hold has no cutoff: giving it up costs the clinic nothing.
            (Pending, Cancel, p, -10, Ok(Cancelled)),
            // Arrived visits are completed or cancelled by staff only.
            (Arrived, Complete, s, 20, Ok(Fulfilled)),
            (Arrived, Complete, p, 20, Err(NotForRole)),
            (Arrived, Cancel, p, 20, Err(NotForRole)),
            // The state machine answers before the clock: a finished visit cannot be
            // checked into, whatever the time.
            (Fulfilled, CheckIn, p, 10, Err(NotFromStatus { transition: CheckIn, status: Fulfilled })),
            (Cancelled, Confirm, a, -500, Err(NotFromStatus { transition: Confirm, status: Cancelled })),
        ];
        for (status, t, role, minute, expected) in table {
            let got = transition(&facts(*status), *t, *role, at(*minute));
            assert_eq!(
                got,
                *expected,
                "{status} --{}--> as {role} at minute {minute}",
                t.as_str()
            );
        }
    }

    #[test]
    fn only_held_and_booked_appointments_move_and_patients_not_within_the_cutoff() {
        #[rustfmt::skip]
        let table: &[(Status, Role, i64, Result<(), Refusal>)] = &[
            (Booked, Role::Patient, -121, Ok(())),
            (Booked, Role::Patient, -100, Err(Cutoff { minutes: 120 })),
            (Pending, Role::Patient, -100, Err(Cutoff { minutes: 120 })),
            (Booked, Role::Provider, -1, Ok(())),
            (Booked, Role::Admin, 1, Ok(())),
            (Arrived, Role::Admin, -500, Err(Refusal::NotReschedulable(Arrived))),
            (Cancelled, Role::Patient, -500, Err(Refusal::NotReschedulable(Cancelled))),
        ];
        for (status, role, minute, expected) in table {
            assert_eq!(
                reschedule(&facts(*status), *role, at(*minute)),
                *expected,
                "reschedule {status} as {role} at minute {minute}"
            );
        }
    }

    #[test]
    fn who_books_for_whom() {
        let me = Uuid::from_u128(7);
        let other = Uuid::from_u128(8);
        let provider = 100;
        let provider_id = Uuid::from_u128(provider);
        #[rustfmt::skip]
        let table: &[BookingCase] = &[
            // A patient: for themselves, once they have a record.
            (caller(Role::Patient, 1), Some(me), None, Ok(me)),
            (caller(Role::Patient, 1), Some(me), Some(me), Ok(me)),
            (caller(Role::Patient, 1), Some(me), Some(other), Err(Refusal::ForSelfOnly)),
            (caller(Role::Patient, 1), None, None, Err(Refusal::NoPatientRecord)),
            // A provider: on their own calendar, naming the patient.
            (caller(Role::Provider, provider), None, Some(other), Ok(other)),
            (caller(Role::Provider, provider), None, None, Err(Refusal::PatientRequired)),
            (caller(Role::Provider, 101), None, Some(other), Err(Refusal::NotOwnCalendar)),
            // An admin: on any calendar, naming the patient.
            (caller(Role::Admin, 5), None, Some(other), Ok(other)),
            (caller(Role::Admin, 5), None, None, Err(Refusal::PatientRequired)),
        ];
        for (who, own, requested, expected) in table {
            assert_eq!(
                booking_patient(who, provider_id, *own, *requested),
                *expected,
                "{} {} booking for {requested:?}",
                who.role,
                who.account_id
            );
        }
    }

    #[test]
    fn standing_follows_role_and_ownership() {
        let provider = Uuid::from_u128(100);
        let patient_account = Some(Uuid::from_u128(1));
        let table = [
            (caller(Role::Admin, 5), Standing::Admin),
            (caller(Role::Provider, 100), Standing::OwnProvider),
            (caller(Role::Provider, 101), Standing::Stranger),
            (caller(Role::Patient, 1), Standing::OwnPatient),
            (caller(Role::Patient, 2), Standing::Stranger),
        ];
        for (who, expected) in table {
            assert_eq!(Standing::of(&who, provider, patient_account), expected, "{who:?}");
        }
    }

    #[test]
    fn only_access_refusals_are_audited() {
        for refusal in [Refusal::Hidden, NotForRole, Refusal::NotOwnCalendar] {
            assert!(refusal.audited(), "{refusal:?}");
        }
        for refusal in [
            HoldExpired,
            NotStarted,
            AlreadyOver,
            Cutoff { minutes: 1 },
            Refusal::ForSelfOnly,
        ] {
            assert!(!refusal.audited(), "{refusal:?}");
        }
    }
}
