//! Who may do what with a patient's record: every rule in one place.
//!
//! | caller   | demographics (read, update)       | notes (read)                 | notes (write)       |
//! |----------|-----------------------------------|------------------------------|---------------------|
//! | patient  | their own record only             | their own, signed notes only | never               |
//! | provider | within a care relationship, or with a live break-glass grant  | same                         | same                |
//! | admin    | any record (account management)   | never                        | never               |
//!
//! A care relationship is an appointment with the provider within the configured
//! window before or after now, or having registered the patient within that window.
//! A booking is not a key to the record: an appointment a provider booked for a
//! patient they had no relationship with counts only once the patient accepts it.
//! A patient asking about anyone else's record is told it does not exist (404); a
//! provider without a relationship is refused (403, `no_care_relationship`), which
//! tells them break-glass is the way in. The decision is pure ([`decide`] over a
//! loaded [`Relationship`]); every refusal is audited by the caller.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use uuid::Uuid;

use super::appointments_link::Counting;
use super::break_glass;
use super::patients::PatientRow;
use crate::audit::{Code, purpose};
use crate::context::{Caller, Role};

/// What the caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ReadDemographics,
    UpdateDemographics,
    ReadNotes,
    WriteNotes,
}

/// Access allowed, and on what grounds (the audit event's purpose of use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub purpose: Code,
    /// The break-glass grant used, if that is how access was obtained.
    pub break_glass: Option<Uuid>,
    /// The patient is the caller themselves (patients see only signed notes).
    pub own_record: bool,
}

/// Access refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Answer as if the record did not exist.
    Hidden { reason: Code },
    /// Answer 403 with this reason.
    Refused { reason: Code },
}

/// How the caller stands to the patient: the facts the decision needs, loaded by
/// [`relationship`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Relationship {
    /// The record is the caller's own.
    pub own_record: bool,
    /// The caller is a provider with a care relationship with the patient now.
    pub care: bool,
    /// The caller's live break-glass grant for this patient (looked up only without a
    /// care relationship).
    pub break_glass: Option<Uuid>,
}

/// Loads what [`decide`] needs to know about `caller` and `patient` at `now`. Only a
/// provider's standing needs the database.
pub fn relationship(
    conn: &mut PgConnection,
    caller: &Caller,
    patient: &PatientRow,
    window: Duration,
    now: DateTime<Utc>,
) -> QueryResult<Relationship> {
    let mut facts = Relationship {
        own_record: patient.account_id == Some(caller.account_id),
        ..Relationship::default()
    };
    if caller.role == Role::Provider {
        facts.care = care_relationship(conn, caller.account_id, patient, window, now)?;
        if !facts.care {
            facts.break_glass = break_glass::live_grant(conn, caller.account_id, patient.id)?;
        }
    }
    Ok(facts)
}

/// The one decision, over the loaded relationship.
pub fn decide(role: Role, relationship: Relationship, operation: Operation) -> Result<Grant, Refusal> {
    let grant = |purpose, break_glass, own_record| Grant {
        purpose,
        break_glass,
        own_record,
    };
    match role {
        Role::Patient if !relationship.own_record => Err(Refusal::Hidden {
            reason: Code::new("not_own_record"),
        }),
        Role::Patient if operation == Operation::WriteNotes => Err(Refusal::Refused {
            reason: Code::new("patients_do_not_write_notes"),
        }),
        Role::Patient => Ok(grant(purpose::PATIENT_REQUEST, None, true)),
        Role::Admin => match operation {
            Operation::ReadDemographics | Operation::UpdateDemographics => {
                Ok(grant(purpose::OPERATIONS, None, false))
            }
            Operation::ReadNotes | Operation::WriteNotes => Err(Refusal::Refused {
                reason: Code::new("admins_do_not_read_notes"),
            }),
        },
        Role::Provider if relationship.care => Ok(grant(purpose::TREATMENT, None, false)),
        Role::Provider => match relationship.break_glass {
            Some(id) => Ok(grant(purpose::EMERGENCY, Some(id), false)),
            None => Err(Refusal::Refused {
                reason: Code::new("no_care_relationship"),
            }),
        },
    }
}

/// Whether a booking the provider makes now for `patient_id` opens the record: a
/// care relationship not made of the provider's own unaccepted bookings (false for
/// no such patient).
pub fn relationship_for_booking(
    conn: &mut PgConnection,
    provider_id: Uuid,
    patient_id: Uuid,
    window: Duration,
    now: DateTime<Utc>,
) -> QueryResult<bool> {
    match super::patients::load(conn, patient_id)? {
        Some(patient) => {
            relationship_counting(conn, provider_id, &patient, window, now, Counting::NotSelfMade)
        }
        None => Ok(false),
    }
}

/// Whether the provider has a care relationship with the patient at `now`.
pub fn care_relationship(
    conn: &mut PgConnection,
    provider_id: Uuid,
    patient: &PatientRow,
    window: Duration,
    now: DateTime<Utc>,
) -> QueryResult<bool> {
    relationship_counting(conn, provider_id, patient, window, now, Counting::Opening)
}

fn relationship_counting(
    conn: &mut PgConnection,
    provider_id: Uuid,
    patient: &PatientRow,
    window: Duration,
    now: DateTime<Utc>,
    counting: Counting,
) -> QueryResult<bool> {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(90));
    if patient.created_by == provider_id && patient.created_at > now - window {
        return Ok(true);
    }
    super::appointments_link::has_appointment_within(conn, provider_id, patient.id, window, now, counting)
}

#[cfg(test)]
mod tests {
    use super::*;

    use Operation::{ReadDemographics, ReadNotes, UpdateDemographics, WriteNotes};

    const ALL: [Operation; 4] = [ReadDemographics, UpdateDemographics, ReadNotes, WriteNotes];

    fn facts(own_record: bool, care: bool, break_glass: Option<u128>) -> Relationship {
        Relationship {
            own_record,
            care,
            break_glass: break_glass.map(Uuid::from_u128),
        }
    }

    /// The table in the module header, row by row: (role, relationship, operation)
    /// to the purpose granted, or the refusal's code and whether it is hidden.
    #[test]
    fn the_access_table_for_every_role_relationship_and_operation() {
        type Expected = Result<(&'static str, Option<u128>, bool), (&'static str, bool)>;
        let expect = |role: Role, rel: Relationship, op: Operation| -> Expected {
            match role {
                Role::Patient if !rel.own_record => Err(("not_own_record", true)),
                Role::Patient if op == WriteNotes => Err(("patients_do_not_write_notes", false)),
                Role::Patient => Ok(("patient_request", None, true)),
                Role::Admin if matches!(op, ReadNotes | WriteNotes) => {
                    Err(("admins_do_not_read_notes", false))
                }
                Role::Admin => Ok(("operations", None, false)),
                Role::Provider if rel.care => Ok(("treatment", None, false)),
                Role::Provider if rel.break_glass.is_some() => Ok(("emergency", Some(9), false)),
                Role::Provider => Err(("no_care_relationship", false)),
            }
        };
        let relationships = [
            facts(false, false, None),
            facts(true, false, None),
            facts(false, true, None),
            facts(false, false, Some(9)),
            facts(false, true, Some(9)),
        ];
        for role in [Role::Patient, Role::Provider, Role::Admin] {
            for rel in relationships {
                for op in ALL {
                    let got = match decide(role, rel, op) {
                        Ok(g) => Ok((
                            purpose_name(&g.purpose),
                            g.break_glass.map(|id| id.as_u128()),
                            g.own_record,
                        )),
                        Err(Refusal::Hidden { reason }) => Err((code_name(&reason), true)),
                        Err(Refusal::Refused { reason }) => Err((code_name(&reason), false)),
                    };
                    assert_eq!(got, expect(role, rel, op), "{role} {rel:?} {op:?}");
                }
            }
        }
    }

    fn purpose_name(code: &Code) -> &'static str {
        [
            (purpose::PATIENT_REQUEST, "patient_request"),
            (purpose::OPERATIONS, "operations"),
            (purpose::TREATMENT, "treatment"),
            (purpose::EMERGENCY, "emergency"),
        ]
        .into_iter()
        .find(|(purpose, _)| purpose == code)
        .map_or("other", |(_, name)| name)
    }

    fn code_name(code: &Code) -> &'static str {
        [
            "not_own_record",
            "patients_do_not_write_notes",
            "admins_do_not_read_notes",
            "no_care_relationship",
        ]
        .into_iter()
        .find(|name| code.as_str() == *name)
        .unwrap_or("other")
    }
}
