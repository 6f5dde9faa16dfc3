//! The one refusal path: a [`Denial`] says what was asked for (the resource, its id,
//! the patient it concerns), why it was refused, and what the caller is told; its
//! [`refuse`](Denial::refuse) records it as an `access_denied` event and yields that
//! answer. Every place that denies access (appointments, records, calendars, roles,
//! the real-time gateway, consultations) goes through it, so every refusal is in the
//! log in the same shape.
//!
//! The event is written in a transaction of its own: the refused work has rolled back
//! (or never started), and the refusal stands only once it is recorded. If recording
//! fails, the caller gets that failure (a 503 when the database is gone), not the
//! refusal.

use std::borrow::Cow;

use uuid::Uuid;

use super::{AuditEvent, Code, DetailValue, action, actor, event, purpose};
use crate::context::{Caller, RequestContext};
use crate::db::Db;
use crate::error::Error;

/// A denied access, ready to be recorded and answered.
#[derive(Debug)]
pub struct Denial {
    resource_type: Code,
    resource_id: Option<Uuid>,
    patient: Option<Uuid>,
    reason: Code,
    details: Vec<(Code, DetailValue)>,
    answer: Error,
}

impl Denial {
    /// The caller is told the resource does not exist (404): they may not even learn
    /// that it does.
    pub fn hidden(resource_type: Code, reason: Code) -> Denial {
        Denial::told(resource_type, reason, Error::NotFound)
    }

    /// The caller is told they may not (403), with the reason as the problem's code
    /// and `detail` as what to do about it.
    pub fn refused(resource_type: Code, reason: Code, detail: impl Into<Cow<'static, str>>) -> Denial {
        let answer = Error::Refused {
            code: reason.to_string(),
            detail: detail.into(),
        };
        Denial::told(resource_type, reason, answer)
    }

    /// The caller is told only that this is forbidden (403): a route their role does
    /// not open.
    pub fn forbidden(resource_type: Code, reason: Code) -> Denial {
        Denial::told(resource_type, reason, Error::Forbidden)
    }

    /// The caller is told `answer`.
    pub fn told(resource_type: Code, reason: Code, answer: Error) -> Denial {
        Denial {
            resource_type,
            resource_id: None,
            patient: None,
            reason,
            details: Vec::new(),
            answer,
        }
    }

    /// The resource asked for.
    #[must_use]
    pub fn resource(mut self, id: Uuid) -> Denial {
        self.resource_id = Some(id);
        self
    }

    /// The patient the resource concerns.
    #[must_use]
    pub fn patient(mut self, patient: Uuid) -> Denial {
        self.patient = Some(patient);
        self
    }

    /// One more detail for the event (never PHI: details are codes, ids and counts).
    #[must_use]
    pub fn detail(mut self, key: Code, value: DetailValue) -> Denial {
        self.details.push((key, value));
        self
    }

    pub fn reason(&self) -> &Code {
        &self.reason
    }

    /// The `access_denied` event for this denial.
    pub fn event(&self, ctx: &RequestContext, caller: &Caller) -> AuditEvent {
        let mut event = event(
            ctx,
            actor(caller),
            action::ACCESS_DENIED,
            self.resource_type.clone(),
            purpose::SYSTEM_ADMINISTRATION,
        );
        event.resource_id = self.resource_id;
        if let Some(patient) = self.patient {
            event = event.patient(patient);
        }
        for (key, value) in &self.details {
            event = event.detail(key.clone(), value.clone());
        }
        event.failed(self.reason.clone())
    }

    /// Records the denial; for callers that answer in their own way (a WebSocket
    /// frame, a closed socket) and only need it in the log.
    pub async fn record(&self, db: &Db, ctx: &RequestContext, caller: &Caller) -> Result<(), Error> {
        let event = self.event(ctx, caller);
        db.run(move |conn| super::record(conn, &event)).await
    }

    /// Records the denial and yields the caller's answer (or the recording's failure).
    pub async fn refuse(self, db: &Db, ctx: &RequestContext, caller: &Caller) -> Error {
        match self.record(db, ctx, caller).await {
            Ok(()) => self.answer,
            Err(e) => e,
        }
    }
}
