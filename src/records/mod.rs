//! Patient records: demographics and clinical notes, every PHI field encrypted, every
//! read and write audited, access decided in one place.
//!
//! - [`demographics`]: the profile's fields, parsed and validated.
//! - [`patients`]: patient rows, sealed field by field, with blind indexes.
//! - [`notes`]: versioned clinical notes, signing and amendments.
//! - [`access`]: who may do what (the rules table) and why (the purpose of use).
//! - [`break_glass`]: emergency access with a reason, a time limit and a review.
//! - [`routes`]: the HTTP API.
//!
//! Every route goes through [`guarded`]: load the patient, decide, then do the work
//! and write its audit event in one transaction. A refusal is recorded in the audit
//! log before it is answered; so is a field that fails to decrypt (the request gets a
//! bare 500, the server carries on).

pub mod access;
pub mod appointments_link;
pub mod audit_routes;
pub mod break_glass;
pub mod demographics;
pub mod note_routes;
pub mod notes;
pub mod patients;
pub mod routes;

use diesel::Connection;
use diesel::pg::PgConnection;
use uuid::Uuid;

use crate::audit::{self, AuditEvent, Code, DetailValue, action};
use crate::context::Caller;
use crate::context::RequestContext;
use crate::crypto::CryptoError;
use crate::error::Error;
use crate::state::AppState;
use access::{Grant, Operation, Refusal};
use patients::PatientRow;

/// The field groups audit events name.
pub mod fields {
    use crate::audit::Code;
    pub const DEMOGRAPHICS: Code = Code::new("demographics");
    pub const DEMOGRAPHICS_SUMMARY: Code = Code::new("demographics_summary");
    pub const NOTES: Code = Code::new("notes");
}

/// Why guarded work did not complete.
#[derive(Debug)]
pub enum RecordsError {
    Missing,
    /// Refused: audited before the caller is answered.
    Denied(Box<audit::Denial>),
    Decryption(CryptoError),
    Other(Error),
}

impl From<diesel::result::Error> for RecordsError {
    fn from(e: diesel::result::Error) -> Self {
        RecordsError::Other(e.into())
    }
}

impl From<Error> for RecordsError {
    fn from(e: Error) -> Self {
        RecordsError::Other(e)
    }
}

impl From<CryptoError> for RecordsError {
    fn from(e: CryptoError) -> Self {
        if e.is_decryption_failure() {
            RecordsError::Decryption(e)
        } else {
            RecordsError::Other(e.into())
        }
    }
}

/// Access to one patient's record, granted for one request.
#[derive(Debug)]
pub struct Access {
    pub caller: Caller,
    pub ctx: RequestContext,
    pub patient: PatientRow,
    pub grant: Grant,
}

impl Access {
    /// An audit event about this patient, on the grounds the grant gives.
    pub fn event(&self, action: Code, resource_type: Code, fields: Code) -> AuditEvent {
        let mut event = audit::event(
            &self.ctx,
            audit::actor(&self.caller),
            action,
            resource_type,
            self.grant.purpose.clone(),
        )
        .patient(self.patient.id)
        .detail(Code::new("fields"), DetailValue::Code(fields));
        if let Some(grant) = self.grant.break_glass {
            event = event.detail(Code::new("break_glass_grant"), DetailValue::Id(grant));
        }
        event
    }
}

/// Loads patient `patient_id`, decides whether `caller` may do `operation`, and runs
/// `work` in the same transaction. `fields` names what the work touches, for the
/// audit events of refusals and decryption failures.
pub async fn guarded<T, F>(
    state: &AppState,
    ctx: &RequestContext,
    caller: Caller,
    patient_id: Uuid,
    operation: Operation,
    fields: Code,
    work: F,
) -> Result<T, Error>
where
    F: FnOnce(&mut PgConnection, &AppState, &Access) -> Result<T, RecordsError> + Send + 'static,
    T: Send + 'static,
{
    let window = state.settings.records.care_relationship_window;
    let request = ctx.clone();
    let denied_fields = fields.clone();
    let outcome = state
        .with_db(move |conn, state| {
            Ok(conn.transaction::<T, RecordsError, _>(|conn| {
                let patient = patients::load(conn, patient_id)?.ok_or(RecordsError::Missing)?;
                let relationship = access::relationship(conn, &caller, &patient, window, state.clock.now())?;
                let grant = access::decide(caller.role, relationship, operation).map_err(|refusal| {
                    RecordsError::Denied(Box::new(denial(refusal, patient_id, denied_fields.clone())))
                })?;
                let access = Access {
                    caller,
                    ctx: request,
                    patient,
                    grant,
                };
                work(conn, state, &access)
            }))
        })
        .await?;
    match outcome {
        Ok(value) => Ok(value),
        Err(RecordsError::Missing) => Err(Error::NotFound),
        Err(RecordsError::Denied(denial)) => Err(denial.refuse(&state.db, ctx, &caller).await),
        Err(RecordsError::Decryption(e)) => {
            tracing::error!(patient.id = %patient_id, error = %e, "a sealed field failed to decrypt");
            metrics::counter!("records_decryption_failures_total").increment(1);
            let event = audit::event(
                ctx,
                audit::actor(&caller),
                action::READ,
                audit::resource::PATIENT,
                audit::purpose::SYSTEM_ADMINISTRATION,
            )
            .resource(patient_id)
            .patient(patient_id)
            .detail(Code::new("fields"), DetailValue::Code(fields))
            .failed(Code::new("decryption_failed"));
            state.db.run(move |conn| audit::record(conn, &event)).await?;
            Err(Error::internal("a sealed field failed to decrypt"))
        }
        Err(RecordsError::Other(e)) => Err(e),
    }
}

/// The denial of an access the rules refused: hidden or refused, about the patient's
/// record and the fields asked for.
fn denial(refusal: Refusal, patient_id: Uuid, fields: Code) -> audit::Denial {
    let denial = match refusal {
        Refusal::Hidden { reason } => audit::Denial::hidden(audit::resource::PATIENT, reason),
        Refusal::Refused { reason } => {
            let detail = refusal_detail(reason.as_str());
            audit::Denial::refused(audit::resource::PATIENT, reason, detail)
        }
    };
    denial
        .resource(patient_id)
        .patient(patient_id)
        .detail(Code::new("fields"), DetailValue::Code(fields))
}

fn refusal_detail(code: &str) -> &'static str {
    match code {
        "no_care_relationship" => {
            "You have no care relationship with this patient. In an emergency, open the record with break-glass."
        }
        "admins_do_not_read_notes" => "Administrators do not read clinical notes.",
        "patients_do_not_write_notes" => "Clinical notes are written by providers.",
        _ => "You are not allowed to do this.",
    }
}
