//! Appointment reminders that are never lost, never doubled, never stale.
//!
//! - [`schedule`]: the jobs of an appointment, replaced in the same transaction as
//!   every change to it (keyed by its version), so a rescheduled appointment reminds
//!   about its new time only and a cancelled one never reminds.
//! - [`dispatcher`]: every instance claims due jobs with `FOR UPDATE SKIP LOCKED`
//!   (each job is sent exactly once, across instances), turns them into notifications
//!   for the patient and the provider, hands those to every channel, and marks the
//!   jobs sent, all in one transaction. Jobs found overdue (the server was down) go out
//!   marked late, unless the appointment has already started.
//!
//! Time comes from [`crate::clock::Clock`], so tests move it instead of waiting.

pub mod dispatcher;
pub mod schedule;
