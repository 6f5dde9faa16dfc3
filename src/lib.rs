//! Carewire: a real-time backend for healthcare scheduling and telemedicine.
//!
//! One server (`carewire serve`) with PostgreSQL behind it. Patients book appointments
//! with providers over REST, stay connected over WebSocket, and meet in video
//! consultations whose signaling runs through the server. Patient data is encrypted
//! field by field and every access to it is audited.
//!
//! # Layout
//!
//! Dependencies point down: each module names only those listed before it (a test,
//! `module_graph_points_down` in `tests/api/platform.rs`, reads the imports and prints
//! the layers). The leaves:
//!
//! - [`error`]: the one error type; every failure leaves as RFC 9457 problem+json.
//! - [`config`]: typed settings from the environment and an optional TOML file
//!   (including the consultation window, [`config::Window`]).
//! - [`context`]: what every layer names about a request: the [`context::Caller`],
//!   their [`context::Role`], and the [`context::RequestContext`] (request id, address).
//! - [`clock`]: the time timed work reads (movable in tests).
//! - [`schema`], [`text`] (free text from clients, parsed once with the rules of its
//!   kind), [`telemetry`] (the tracing subscriber).
//! - [`db`]: the r2d2 pool, the one helper that runs diesel work off the async
//!   runtime ([`db::Db::run`]), embedded migrations, and the embedded PostgreSQL
//!   cluster used when no `DATABASE_URL` is given.
//! - [`crypto`]: the key hierarchy (KEK → data keys), field encryption with
//!   AES-256-GCM and keyed blind indexes. The only module that touches key material.
//!
//! The services every feature uses:
//!
//! - [`audit`]: recording audit events in the caller's transaction (through the
//!   connection or [`db::Db`]), the one refusal path ([`audit::Denial`]: every denied
//!   access is recorded and answered through it), the sealer that chains and
//!   checkpoints them, and verification (the model and the chain live in the
//!   `carewire-audit` crate).
//! - [`outbox`]: the events every change writes, in its transaction.
//! - [`auth`]: passwords, access and refresh tokens, sessions, login throttling,
//!   WebSocket tickets; who a token stands for.
//! - [`state`]: [`state::AppState`], what every handler shares (settings, pool,
//!   crypto, auth, clock).
//! - [`http`]: the HTTP edge: the connection service (request ids, spans, metrics,
//!   CORS, security headers, panics), body parsing, the WebSocket handshake, the
//!   shapes the OpenAPI annotations name, health and metrics routes, the browser client.
//! - [`access`]: the warp filters that yield the authenticated caller and enforce
//!   roles (refusals are audited).
//!
//! The features, each with its rules and its routes:
//!
//! - [`accounts`]: accounts (patients, providers, admins), signing in and out.
//! - [`records`]: patient records (demographics, clinical notes, break-glass), the
//!   access rules, and the audit log's routes (who saw what).
//! - [`notifications`], [`reminders`]: what users are told, through which channels,
//!   and the reminders that are never lost.
//! - [`scheduling`]: providers, availability, slots and appointments (no double
//!   booking, enforced by exclusion constraints).
//! - [`realtime`]: the WebSocket gateway: event stream, bus, hub, protocol, resume.
//! - [`consult`]: video consultations: who may enter a room and when, the room tasks
//!   that run the `carewire-signaling` state machine, and their effects.
//!
//! The top, which names the features and which none of them names:
//!
//! - [`api`]: the route tree of every feature behind one edge, and the OpenAPI document.
//! - [`demo`]: the demo clinic seeded by `CAREWIRE_DEMO` / `serve --demo` (development
//!   only): an always-available provider with a published password.
//! - [`startup`]: [`startup::Application`], which builds the whole server on a bound
//!   listener, so tests and `main` start it the same way.
//! - [`cli`]: the command line (`serve`, `migrate`, `user create`, `keys ...`,
//!   `audit verify|export`).

pub mod access;
pub mod accounts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consult;
pub mod context;
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
