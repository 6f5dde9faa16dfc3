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
//! A patient asking about anyone else's record is told it does not exist (404); a
//! provider without a relationship is refused (403, `no_care_relationship`), which
//! tells them break-glass is the way in. Every refusal is audited by the caller.

use std::time::Duration;

use chrono::Utc;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use uuid::Uuid;

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
pub enum Denial {
    /// Answer as if the record did not exist.
    Hidden { reason: Code },
    /// Answer 403 with this reason.
    Refused { reason: Code },
}

impl Denial {
    pub fn reason(&self) -> &Code {
        match self {
            Denial::Hidden { reason } | Denial::Refused { reason } => reason,
        }
    }
}

/// The one decision.
pub fn decide(
    conn: &mut PgConnection,
    caller: &Caller,
    patient: &PatientRow,
    operation: Operation,
    window: Duration,
) -> QueryResult<Result<Grant, Denial>> {
    Ok(match caller.role {
        Role::Patient => {
            if patient.account_id != Some(caller.account_id) {
                Err(Denial::Hidden {
                    reason: Code::new("not_own_record"),
                })
            } else if operation == Operation::WriteNotes {
                Err(Denial::Refused {
                    reason: Code::new("patients_do_not_write_notes"),
                })
            } else {
                Ok(Grant {
                    purpose: purpose::PATIENT_REQUEST,
                    break_glass: None,
                    own_record: true,
                })
            }
        }
        Role::Admin => match operation {
            Operation::ReadDemographics | Operation::UpdateDemographics => Ok(Grant {
                purpose: purpose::OPERATIONS,
                break_glass: None,
                own_record: false,
            }),
            Operation::ReadNotes | Operation::WriteNotes => Err(Denial::Refused {
                reason: Code::new("admins_do_not_read_notes"),
            }),
        },
        Role::Provider => {
            if care_relationship(conn, caller.account_id, patient, window)? {
                Ok(Grant {
                    purpose: purpose::TREATMENT,
                    break_glass: None,
                    own_record: false,
                })
            } else if let Some(grant) = break_glass::live_grant(conn, caller.account_id, patient.id)? {
                Ok(Grant {
                    purpose: purpose::EMERGENCY,
                    break_glass: Some(grant),
                    own_record: false,
                })
            } else {
                Err(Denial::Refused {
                    reason: Code::new("no_care_relationship"),
                })
            }
        }
    })
}

/// Whether the provider has a care relationship with the patient now.
pub fn care_relationship(
    conn: &mut PgConnection,
    provider_id: Uuid,
    patient: &PatientRow,
    window: Duration,
) -> QueryResult<bool> {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(90));
    if patient.created_by == provider_id && patient.created_at > Utc::now() - window {
        return Ok(true);
    }
    super::appointments_link::has_appointment_within(conn, provider_id, patient.id, window)
}
