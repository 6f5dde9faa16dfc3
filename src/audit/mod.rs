//! The server's side of the audit log: recording events in the caller's transaction,
//! the sealer that chains them and signs checkpoints, the public keys that verify
//! them ([`trust`]), verification over the database, and the view of an event that the admin and patient routes
//! (in `records::audit_routes`) and `carewire audit export` (in `cli::audit`)
//! show.
//!
//! The model, encoding, chain and verification rules live in `carewire-audit`; this
//! module only wires them to the caller's transaction and the pool. It sits below
//! every feature and below the access layer (every refusal is recorded through
//! [`Denial`]), so it
//! names callers through [`crate::context`] and reaches the database through
//! [`crate::db::Db`].
//!
//! Rule for every feature: a change, or a read of patient data, and its audit event
//! are written in one transaction with [`record`]. If the audit write fails, the
//! transaction rolls back and the request fails: nothing happens unrecorded.

pub mod denial;
pub mod sealer;
pub mod trust;
pub mod verification;
pub mod view;

use diesel::pg::PgConnection;

pub use carewire_audit::event::{Actor, AuditEvent, Code, DetailValue, action, purpose, resource};
pub use denial::Denial;

use crate::context::RequestContext;
use crate::context::{Caller, Role};
use crate::error::Error;

/// An event stamped with where the request came from.
pub fn event(
    ctx: &RequestContext,
    actor: Actor,
    action: Code,
    resource_type: Code,
    purpose: Code,
) -> AuditEvent {
    AuditEvent::new(actor, action, resource_type, purpose).origin(
        Some(ctx.request_id.as_str()),
        ctx.client_ip,
        ctx.user_agent.as_deref(),
    )
}

/// The audit actor for a caller.
pub fn actor(caller: &Caller) -> Actor {
    user(caller.account_id, caller.role)
}

/// The audit actor for an account.
pub fn user(id: uuid::Uuid, role: Role) -> Actor {
    Actor::User {
        id,
        role: role_code(role),
    }
}

/// The purpose of use an access by someone in `role` carries when nothing more
/// specific applies: a patient's own request, a provider's treatment, an admin's
/// operations.
pub fn purpose_of(role: Role) -> Code {
    match role {
        Role::Patient => purpose::PATIENT_REQUEST,
        Role::Provider => purpose::TREATMENT,
        Role::Admin => purpose::OPERATIONS,
    }
}

pub fn role_code(role: Role) -> Code {
    match role {
        Role::Patient => Code::new("patient"),
        Role::Provider => Code::new("provider"),
        Role::Admin => Code::new("admin"),
    }
}

/// Records `event` in the caller's transaction. An error here must fail the
/// operation: callers propagate it with `?` inside their transaction.
pub fn record(conn: &mut PgConnection, event: &AuditEvent) -> Result<(), Error> {
    carewire_audit::store::record(conn, event)
        .map(|_| ())
        .map_err(write_failed)
}

/// Records several events in the caller's transaction with one statement; fails as
/// [`record`] does.
pub fn record_many(conn: &mut PgConnection, events: &[AuditEvent]) -> Result<(), Error> {
    carewire_audit::store::record_many(conn, events)
        .map(|_| ())
        .map_err(write_failed)
}

/// A failed audit write fails the request: a 503 when the database went away (as
/// any query's), a 500 otherwise.
fn write_failed(e: diesel::result::Error) -> Error {
    metrics::counter!("audit_write_failures_total").increment(1);
    match Error::from(e) {
        Error::Internal(cause) => Error::Internal(cause.context("writing the audit event failed")),
        other => other,
    }
}
