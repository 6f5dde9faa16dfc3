//! Carewire's audit log: who read or changed what, provably complete and untampered.
//!
//! This crate owns the audit event model, its canonical byte encoding, the hash chain
//! (`hash_n = SHA-256(tag ‖ hash_{n-1} ‖ encoding(event_n))`), signed checkpoints and
//! verification. Its storage goes through diesel on the caller's connection, so an
//! audit row always joins the transaction of the change or read it records. It never
//! depends on the HTTP layer.
//!
//! Contents arrive with the audit-log work.
