//! Carewire: a real-time backend for healthcare scheduling and telemedicine.
//!
//! One server (`carewire serve`) with PostgreSQL behind it. Patients book appointments
//! with providers over REST, stay connected over WebSocket, and meet in video
//! consultations whose signaling runs through the server. Patient data is encrypted
//! field by field and every access to it is audited.
//!
//! # Layout
//!
//! - [`config`]: typed settings from the environment and an optional TOML file.
//! - [`telemetry`]: the tracing subscriber (text or JSON logs).
//! - [`db`]: the r2d2 pool, the one helper that runs diesel work off the async
//!   runtime, embedded migrations, and the embedded PostgreSQL cluster used when no
//!   `DATABASE_URL` is given.
//! - [`crypto`]: the key hierarchy (KEK → data keys), field encryption with
//!   AES-256-GCM and keyed blind indexes. The only module that touches key material.
//! - [`error`]: the one error type; every failure leaves as RFC 9457 problem+json.
//! - [`text`]: free text from clients (names, bios, reasons, notes), parsed once with
//!   the rules of its kind: no NUL, no control characters, lengths in characters.
//! - [`http`]: the HTTP edge: the connection service (request ids, spans, metrics,
//!   CORS, security headers, panics), body parsing, health and metrics routes.
//! - [`auth`]: passwords, access and refresh tokens, login throttling, and the warp
//!   filters that yield the authenticated caller and enforce roles.
//! - [`accounts`]: accounts (patients, providers, admins) and their routes.
//! - [`audit`]: recording audit events in the caller's transaction, the sealer that
//!   chains and checkpoints them, verification, and the audit routes and commands
//!   (the model and the chain live in the `carewire-audit` crate).
//! - [`records`]: patient records (demographics, clinical notes, break-glass), the
//!   access rules, and their routes.
//! - [`scheduling`]: providers, availability, slots and appointments (no double
//!   booking, enforced by exclusion constraints).
//! - [`outbox`]: the events every change writes, in its transaction.
//! - [`realtime`]: the WebSocket gateway: event stream, bus, hub, protocol, resume.
//! - [`consult`]: video consultations: who may enter a room and when, the room tasks
//!   that run the `carewire-signaling` state machine, and their effects.
//! - [`notifications`], [`reminders`]: what users are told, through which channels,
//!   and the reminders that are never lost.
//! - [`demo`]: the demo clinic seeded by `CAREWIRE_DEMO` / `serve --demo` (development
//!   only): an always-available provider with a published password.
//! - [`clock`]: the time timed work reads (movable in tests).
//! - [`startup`]: [`startup::Application`], which builds the whole server on a bound
//!   listener, so tests and `main` start it the same way.
//! - [`cli`]: the command line (`serve`, `migrate`, `user create`).

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consult;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod error;
pub mod http;
pub mod notifications;
pub mod outbox;
pub mod realtime;
pub mod records;
pub mod reminders;
pub mod scheduling;
pub mod schema;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod text;

pub use error::Error;
