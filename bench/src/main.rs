//! Carewire's benchmarks.
//!
//! Every scenario runs against a release build on loopback, reports latency
//! percentiles, and measures a baseline in the same run, so that a number is always read
//! against something measured on the same machine at the same time.
//!
//! ```sh
//! cargo run --release -p carewire-bench -- cold-start
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark reports on standard output")]

mod audit;
mod cold_start;
mod consult;
mod db;
mod outage;
mod realtime;
mod records;
mod report;
mod scheduling;
mod server;
mod web;

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "carewire-bench", about = "Carewire's benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Time from spawning `carewire serve` to its first `/readyz` 200: with
    /// DATABASE_URL (when set), with the embedded cluster reused, and on the very first
    /// start (initdb). Baseline: spawning `carewire --version`.
    ColdStart {
        /// Runs per case.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Audit log: transactions per second with concurrent writers, each inserting a
    /// row plus its audit event, against the same inserts without audit (baseline);
    /// sealing lag percentiles; verification speed in entries per second.
    Audit {
        /// Seconds per run (baseline, then audited).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        writers: usize,
    },
    /// Audit verification at scale: `carewire audit verify`'s work end to end from
    /// PostgreSQL over a log of this many sealed entries, against reading the same
    /// pages without verifying and verifying the same entries in memory, in the same
    /// run.
    AuditVerify {
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
    },
    /// Patient records: sealing and opening a field; reading a patient over HTTP with
    /// a release server against the same server built with fields in clear
    /// (`insecure-plaintext-fields`), in the same run; rewrap throughput.
    Records {
        /// Seconds of reads per build.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Patients created before reading.
        #[arg(long, default_value_t = 300)]
        patients: usize,
    },
    /// The real-time gateway: resident memory per idle WebSocket against idle HTTP
    /// keep-alive connections; commit-to-client latency for one provider's slot
    /// changes watched by many sockets against a ping round trip; a burst of reminders
    /// due in the same minute drained by two instances.
    Realtime {
        /// Idle sockets for the memory measurement (the machine's limit is 20,000 open
        /// files per process).
        #[arg(long, default_value_t = 19_000)]
        connections: usize,
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        #[arg(long, default_value_t = 100_000)]
        reminders: usize,
    },
    /// Consultation signaling: relay latency (send to receipt) and throughput with many
    /// rooms exchanging offers, answers (about 3 KB each) and candidates at once, against
    /// a bare tokio-tungstenite relay doing the same work, in the same run.
    Consult {
        #[arg(long, default_value_t = 500)]
        rooms: usize,
        /// Seconds of signaling per system.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Candidates each side sends per round (after one description each).
        #[arg(long, default_value_t = 4)]
        candidates: usize,
        /// Messages a second each socket sends at most (the room allows 20 after a
        /// burst of 60).
        #[arg(long, default_value_t = 16.0)]
        rate: f64,
    },
    /// A database outage: 503 latency while the database is cut off (while the circuit
    /// breaker trips, then with it open) against requests with the database up, in
    /// the same run; time from the database's return to `/readyz` 200 and to the first
    /// live event on a WebSocket. Needs DATABASE_URL on TCP (a proxy sits in between).
    Outage {
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// The browser client: each file fetched in full and revalidated (304) with
    /// concurrent clients against `GET /healthz`, in the same run; whole page loads,
    /// first and return visits.
    Web {
        /// Seconds per case.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 300)]
        page_loads: usize,
    },
    /// Scheduling: bookings per second with concurrent clients on distinct slots
    /// against pgbench running the same transaction's writes (the floor), in the same
    /// run; slot search over 30 days with 500 bookings against none.
    Scheduling {
        /// Seconds of booking (API, then pgbench).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        clients: usize,
    },
}

fn main() -> anyhow::Result<()> {
    carewire::db::init_libpq();
    match Cli::parse().scenario {
        Scenario::ColdStart { runs } => cold_start::run(runs),
        Scenario::Audit { seconds, writers } => audit::run(Duration::from_secs(seconds), writers),
        Scenario::AuditVerify { entries } => audit::verify_run(entries),
        Scenario::Records {
            seconds,
            clients,
            patients,
        } => records::run(seconds, clients, patients),
        Scenario::Consult {
            rooms,
            seconds,
            candidates,
            rate,
        } => consult::run(rooms, seconds, candidates, rate),
        Scenario::Scheduling { seconds, clients } => scheduling::run(seconds, clients),
        Scenario::Outage { rounds } => outage::run(rounds),
        Scenario::Web {
            seconds,
            clients,
            page_loads,
        } => web::run(seconds, clients, page_loads),
        Scenario::Realtime {
            connections,
            watchers,
            reminders,
        } => realtime::run(connections, watchers, reminders),
    }
}
