//! The integration tests, as one test binary: a real server on loopback against a real
//! PostgreSQL (a database of its own per test, copied from one migrated template), real
//! WebSocket clients, real WebRTC peers and, for the web client, a real Chromium.
//! One binary links once and prepares its template once; each area is a module.
//!
//! Run one area with a filter on its module, e.g. `cargo test --test api records::`.

#![allow(clippy::unwrap_used, reason = "tests unwrap: a panic is a failed assertion")]

mod support;

mod audit;
mod consult;
mod contract;
mod identity;
mod platform;
mod realtime;
mod records;
mod scheduling;
mod web;
