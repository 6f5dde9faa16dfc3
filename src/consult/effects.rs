//! The room's effects on the rest of Carewire: audit records, and the appointment
//! moving to `arrived` (the patient checked in) or `fulfilled` (the call took place).
//!
//! Status changes go through the scheduling state machine like any other: it may
//! refuse (an appointment cancelled meanwhile stays cancelled), and each change writes
//! its outbox events, so the provider's queue and both parties' appointment feeds see
//! the check-in live, and the audit event lands in the same transaction.

use diesel::Connection;

use carewire_signaling::{
    AuditAction, AuditRecord, Identity, LeaveReason, RequestedStatus, Role as SeatRole,
};

use super::rooms::RoomFacts;
use crate::audit::{self, Actor, Code, DetailValue, action, purpose, resource};
use crate::context::RequestContext;
use crate::context::Role;
use crate::error::Error;
use crate::scheduling::appointments;
use crate::scheduling::status::{self, Transition};
use crate::state::AppState;

/// Audit actions of the consultation room.
mod act {
    use crate::audit::Code;
    pub const JOINED: Code = Code::new("consult_join");
    pub const RECONNECTED: Code = Code::new("consult_reconnect");
    pub const ADMITTED: Code = Code::new("consult_admit");
    pub const LEFT: Code = Code::new("consult_leave");
    pub const ENDED: Code = Code::new("consult_end");
    pub const GUEST_INVITED: Code = Code::new("consult_guest_invite");
}

fn role_code(role: SeatRole) -> Code {
    match role {
        SeatRole::Patient => Code::new("patient"),
        SeatRole::Provider => Code::new("provider"),
        SeatRole::Interpreter => Code::new("interpreter"),
        SeatRole::Caregiver => Code::new("caregiver"),
        SeatRole::Guest => Code::new("guest"),
    }
}

/// The actor for a seat's occupant. Guests have no account: they are recorded as
/// anonymous, with the invitation number as a detail.
fn actor(identity: Identity, facts: &RoomFacts) -> Actor {
    match identity {
        Identity::Account(id) if id == facts.provider_id => audit::user(id, Role::Provider),
        Identity::Account(id) => audit::user(id, Role::Patient),
        Identity::Guest { .. } => Actor::Anonymous,
    }
}

/// Writes one room record, retrying a failed write. A record that still cannot be
/// written is logged and counted: the room cannot undo what already happened on the
/// sockets, and the audit write-failure metric alerts.
pub async fn audit(state: &AppState, facts: &RoomFacts, origin: RequestContext, record: AuditRecord) {
    let (code, details): (Code, Vec<(Code, DetailValue)>) = match &record.action {
        AuditAction::Joined => (act::JOINED, Vec::new()),
        AuditAction::Reconnected { resumed } => (
            act::RECONNECTED,
            vec![(
                Code::new("resumed"),
                DetailValue::Code(Code::new(if *resumed { "yes" } else { "no" })),
            )],
        ),
        AuditAction::Admitted { by } => {
            let mut details = Vec::new();
            if let Identity::Account(id) = by {
                details.push((Code::new("admitted_by"), DetailValue::Id(*id)));
            }
            (act::ADMITTED, details)
        }
        AuditAction::Left { reason } => (
            act::LEFT,
            vec![(
                Code::new("reason"),
                DetailValue::Code(Code::new(match reason {
                    LeaveReason::Left => "left",
                    LeaveReason::TimedOut => "timed_out",
                })),
            )],
        ),
        AuditAction::Ended => (act::ENDED, Vec::new()),
        AuditAction::GuestInvited { invite, role } => (
            act::GUEST_INVITED,
            vec![
                (Code::new("invite"), DetailValue::Count(i64::from(*invite))),
                (Code::new("guest_role"), DetailValue::Code(role_code(*role))),
            ],
        ),
    };
    let purpose = if matches!(record.identity, Identity::Account(id) if id == facts.provider_id) {
        purpose::TREATMENT
    } else {
        purpose::PATIENT_REQUEST
    };
    let mut event = audit::event(
        &origin,
        actor(record.identity, facts),
        code,
        resource::APPOINTMENT,
        purpose,
    )
    .resource(facts.appointment)
    .patient(facts.patient_id)
    .detail(
        Code::new("seat"),
        DetailValue::Code(Code::new(record.seat.as_str())),
    );
    if let Identity::Guest { invite } = record.identity {
        event = event.detail(Code::new("invite"), DetailValue::Count(i64::from(invite)));
    }
    for (key, value) in details {
        event = event.detail(key, value);
    }
    // The room has moved on already; a write that fails (a busy pool, a dropped
    // connection) is retried a few times before it is given up, logged and counted.
    let event = std::sync::Arc::new(event);
    for wait_ms in [0, 200, 1_000, 5_000] {
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        let attempt = event.clone();
        match state.db.run(move |conn| audit::record(conn, &attempt)).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, appointment = %facts.appointment, "recording a consultation event failed; retrying")
            }
        }
    }
    tracing::error!(appointment = %facts.appointment, "recording a consultation event failed; given up");
}

/// Moves the appointment as the room asks, if the state machine allows it.
pub async fn appointment_status(state: &AppState, facts: &RoomFacts, requested: RequestedStatus) {
    let (transition, actor_id, role) = match requested {
        RequestedStatus::Arrived => (Transition::CheckIn, None, Role::Patient),
        RequestedStatus::Fulfilled => (Transition::Complete, Some(facts.provider_id), Role::Provider),
    };
    let id = facts.appointment;
    // A failure here is the database's (a busy pool, a dropped connection), and losing
    // the change would leave a visit that took place unfulfilled: retry a few times. A
    // retry after a commit that did happen finds the status already moved and changes
    // nothing.
    let mut outcome = Err(Error::internal("not attempted"));
    for wait_ms in [0, 100, 300, 900] {
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        outcome = change_status(state, id, transition, actor_id, role).await;
        if outcome.is_ok() {
            break;
        }
    }
    match outcome {
        Ok(Some(status)) => tracing::info!(appointment = %id, status, "consultation moved the appointment"),
        Ok(None) => tracing::debug!(appointment = %id, "appointment status left as it was"),
        Err(e) => {
            tracing::error!(error = %e, appointment = %id, "the consultation could not update the appointment")
        }
    }
}

/// One attempt at moving appointment `id` through `transition` for the room.
async fn change_status(
    state: &AppState,
    id: uuid::Uuid,
    transition: Transition,
    actor_id: Option<uuid::Uuid>,
    role: Role,
) -> Result<Option<String>, Error> {
    state
        .with_db(move |conn, state| {
            conn.transaction::<_, Error, _>(|conn| {
                let Some(row) = appointments::load_for_update(conn, id)? else {
                    return Ok(None);
                };
                let Ok(to) = status::apply(row.status(), transition, role) else {
                    return Ok(None);
                };
                let updated = appointments::change_status(
                    conn,
                    &state.crypto,
                    &row,
                    to,
                    None,
                    crate::scheduling::reminder_plan(state),
                )?;
                let actor = match actor_id {
                    Some(provider) => audit::user(provider, Role::Provider),
                    None => match appointments::patient_account(conn, row.patient_id)? {
                        Some(account) => audit::user(account, Role::Patient),
                        None => Actor::System {
                            component: Code::new("consultation"),
                        },
                    },
                };
                let event = audit::AuditEvent::new(
                    actor,
                    action::UPDATE,
                    resource::APPOINTMENT,
                    if role == Role::Provider {
                        purpose::TREATMENT
                    } else {
                        purpose::PATIENT_REQUEST
                    },
                )
                .resource(updated.id)
                .patient(updated.patient_id)
                .detail(
                    Code::new("change"),
                    DetailValue::Code(Code::new(transition.as_str())),
                )
                .detail(Code::new("via"), DetailValue::Code(Code::new("consultation")));
                audit::record(conn, &event)?;
                Ok(Some(updated.status))
            })
        })
        .await
}
