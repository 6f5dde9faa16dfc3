//! Carewire's audit log: who read or changed what, provably complete and untampered.
//!
//! - [`event`]: the event model. Only ids, codes and counts go into an event, never
//!   free text that could carry patient data.
//! - [`encoding`]: the canonical, versioned, length-prefixed bytes of a sealed event.
//! - [`chain`]: `hash_n = SHA-256(tag ‖ hash_{n−1} ‖ encoding(event_n))`.
//! - [`checkpoint`]: (size, head, time) signed with Ed25519, kept in the database and
//!   outside it.
//! - [`verify`]: recomputes the chain from the start or a trusted checkpoint, checks
//!   every checkpoint, and names the first bad sequence number and what is wrong.
//! - [`store`]: the PostgreSQL tables through diesel, on the caller's connection, so an
//!   audit row always joins the transaction of what it records; and sealing, which
//!   gives unsealed rows their sequence numbers and hashes in batches.
//!
//! The crate never depends on the HTTP layer; the server wires it in.

pub mod chain;
pub mod checkpoint;
pub mod encoding;
pub mod event;
pub mod fhir;
pub mod schema;
pub mod store;
pub mod verify;

pub use chain::{Hash, Head};
pub use checkpoint::{Checkpoint, CheckpointSigner, SignedCheckpoint};
pub use encoding::SealedEvent;
pub use event::{Actor, AuditEvent, Code, DetailValue, Outcome, action, purpose, resource};
pub use verify::{Checked, CheckpointSet, Entry, Finding, Origin, Summary, Tamper, VerifyError};
