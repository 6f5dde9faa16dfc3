//! Scheduling: providers, appointment types, availability, slots and appointments.
//!
//! - [`providers`]: public profiles and appointment types.
//! - [`availability`]: weekly hours and dated overrides, in wall-clock time.
//! - [`slots`]: free slots, a pure function of rules, overrides, bookings and time.
//! - [`status`]: the appointment state machine (FHIR R4 statuses, who may do what).
//! - [`rules`]: every decision about an appointment, pure: who stands where to it,
//!   who may book for whom, which transition is allowed now, when it may move.
//! - [`reasons`]: the free-text reasons, checked once at the edge.
//! - [`appointments`]: holds, bookings, reschedules, status changes.
//! - [`idempotency`]: `Idempotency-Key` for every change.
//!
//! Every change also writes its event to [`crate::outbox`] and replaces the
//! appointment's reminders ([`crate::reminders`]) in the same transaction.
//! - [`provider_routes`], [`appointment_routes`]: the HTTP API; handlers load the
//!   facts, ask [`rules`], and write the answer.
//!
//! No double booking is the database's invariant (exclusion constraints); this module
//! turns its refusals into 409s.

pub mod appointment_routes;
pub mod appointments;
pub mod availability;
pub mod idempotency;
pub mod provider_routes;
pub mod providers;
pub mod reasons;
pub mod rules;
pub mod slots;
pub mod status;

/// The clock reading and default offsets for scheduling an appointment's reminders.
pub fn reminder_plan(state: &crate::state::AppState) -> crate::reminders::schedule::Plan<'_> {
    crate::reminders::schedule::Plan {
        now: state.clock.now(),
        default_offsets_minutes: &state.settings.reminders.offsets_minutes,
    }
}
