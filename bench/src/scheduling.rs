//! Scheduling: what booking and slot search cost.
//!
//! 1. Bookings per second: concurrent clients book distinct 15-minute slots of one
//!    provider through `POST /v1/appointments` (release server, loopback). Each request
//!    authenticates, checks the slot against rules, overrides and bookings, seals the
//!    reason for visit, inserts under the exclusion constraint and writes the outbox
//!    and audit events in one transaction.
//! 2. The floor, in the same run on the same database: pgbench with as many clients
//!    running only that transaction's writes (the appointment insert under the
//!    exclusion constraint, the outbox insert, the audit insert). Goal: the API reaches
//!    at least 0.6 of pgbench's rate.
//! 3. Slot search over 30 days for a provider with 500 bookings in the range, against
//!    the same search for a provider with none (the baseline).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::db::ScratchDb;
use crate::report::Samples;
use crate::server::{self, Server, id_of};

/// Fifteen-minute slots in a 00:00–23:59 day: the last one ends at 23:45.
const SLOTS_PER_DAY: usize = 95;
const SEARCH_DAYS: i64 = 30;
const SEARCH_BOOKINGS: usize = 500;
const SEARCH_REQUESTS: usize = 200;

pub fn run(seconds: u64, clients: usize) -> anyhow::Result<()> {
    let binary = server::build(None)?;
    let db = ScratchDb::create("sched")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = Server::start(&binary, &db).await?;
        let patients = patients(&server, clients.max(8)).await?;
        let first_day = (Utc::now() + chrono::Duration::days(1))
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .ok_or_else(|| anyhow::anyhow!("midnight exists"))?
            .and_utc();

        let clinic = Calendar::create(&server, "booking").await?;
        let (api, api_rate, refused) = bookings(&server, &clinic, &patients, first_day, seconds, clients).await?;
        println!("booking distinct slots of one provider, {clients} clients, {seconds} s");
        println!("{}", api.line());
        if refused > 0 {
            println!("  ({refused} bookings refused: the numbers above count successes only)");
        }
        match floor(&db, &clinic, &patients[0], first_day, seconds, clients) {
            Ok(pgbench_rate) => println!(
                "throughput: API {api_rate:.0} bookings/s, pgbench floor {pgbench_rate:.0} tx/s; ratio {:.2} (goal >= 0.6)",
                api_rate / pgbench_rate
            ),
            Err(e) => println!("throughput: API {api_rate:.0} bookings/s; pgbench floor not measured: {e:#}"),
        }

        // Far from the booking run's days: the same patients must not overlap there.
        search(&server, &patients, first_day + chrono::Duration::days(400)).await
    })
}

/// Patient records to book for, created by the admin.
async fn patients(server: &Server, n: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let res = server
            .post(
                "/v1/patients",
                &json!({ "legal_name": { "given": format!("Given{i}"), "family": "Bench" }, "birth_date": "1980-05-17" }),
            )
            .await?;
        ids.push(id_of(&res)?);
    }
    Ok(ids)
}

/// A provider in UTC, open 00:00–23:59 every day, with a 15-minute video type.
#[derive(Clone)]
struct Calendar {
    provider: String,
    kind: String,
}

impl Calendar {
    async fn create(server: &Server, tag: &str) -> anyhow::Result<Calendar> {
        let account = server
            .post(
                "/v1/admin/users",
                &json!({ "email": format!("{tag}@bench.test"), "password": server::PASSWORD, "role": "provider", "display_name": "Dr Bench" }),
            )
            .await?;
        let provider = id_of(&account)?;
        server
            .post(
                "/v1/providers",
                &json!({ "account_id": provider, "display_name": "Dr Bench", "time_zone": "UTC" }),
            )
            .await?;
        server
            .send(
                Method::PUT,
                &format!("/v1/providers/{provider}/availability/weekly"),
                &server::all_day_hours(),
            )
            .await?;
        let kind = server
            .post(
                &format!("/v1/providers/{provider}/appointment-types"),
                &json!({ "name": "Check-in", "duration_minutes": 15, "modality": "video", "booking_horizon_days": 730 }),
            )
            .await?;
        Ok(Calendar {
            provider,
            kind: id_of(&kind)?,
        })
    }

    fn booking(&self, patient: &str, starts_at: DateTime<Utc>) -> Value {
        json!({
            "provider_id": self.provider,
            "type_id": self.kind,
            "patient_id": patient,
            "starts_at": starts_at,
            "reason": "Follow-up on a persistent cough",
        })
    }
}

/// The `index`th slot from `first_day` on.
fn slot(first_day: DateTime<Utc>, index: usize) -> DateTime<Utc> {
    let day = i64::try_from(index / SLOTS_PER_DAY).unwrap_or(i64::MAX);
    let minute = i64::try_from(index % SLOTS_PER_DAY * 15).unwrap_or(0);
    first_day + chrono::Duration::days(day) + chrono::Duration::minutes(minute)
}

/// Books distinct slots with `clients` concurrent clients for `seconds`: latencies of
/// successful bookings, bookings per second, and how many were refused.
async fn bookings(
    server: &Server,
    calendar: &Calendar,
    patients: &[String],
    first_day: DateTime<Utc>,
    seconds: u64,
    clients: usize,
) -> anyhow::Result<(Samples, f64, usize)> {
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, token) = (
                server.client.clone(),
                format!("{}/v1/appointments", server.base),
                server.admin_token.clone(),
            );
            let (next, refused, patients, calendar) =
                (next.clone(), refused.clone(), patients.to_vec(), calendar.clone());
            tokio::spawn(async move {
                let mut samples = Samples::new("");
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let body = calendar.booking(&patients[i % patients.len()], slot(first_day, i));
                    let t = Instant::now();
                    let res = client.post(&url).bearer_auth(&token).json(&body).send().await;
                    let ok = match res {
                        Ok(res) => res.status() == 201 && res.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        samples.record(t.elapsed());
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                samples
            })
        })
        .collect();
    let mut all = Samples::new("POST /v1/appointments (book)");
    for task in tasks {
        all.merge(&task.await?);
    }
    let rate = all.count() as f64 / started.elapsed().as_secs_f64();
    Ok((all, rate, refused.load(Ordering::Relaxed)))
}

/// pgbench's rate for the booking transaction's writes alone, on slots far from the
/// API's.
fn floor(
    db: &ScratchDb,
    calendar: &Calendar,
    patient: &str,
    first_day: DateTime<Utc>,
    seconds: u64,
    clients: usize,
) -> anyhow::Result<f64> {
    let pgbench = find_pgbench().ok_or_else(|| anyhow::anyhow!("pgbench is not installed"))?;
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(script.path(), FLOOR_SCRIPT)?;
    let base = first_day + chrono::Duration::days(1000);
    let output = Command::new(pgbench)
        .args(["--no-vacuum", "--protocol=prepared", "--jobs=2"])
        .arg(format!("--client={clients}"))
        .arg(format!("--time={seconds}"))
        .args(["--define", "k=0"])
        .arg("--define")
        .arg(format!("clients={clients}"))
        .arg("--define")
        .arg(format!("provider={}", calendar.provider))
        .arg("--define")
        .arg(format!("kind={}", calendar.kind))
        .arg("--define")
        .arg(format!("patient={patient}"))
        .arg("--define")
        .arg(format!("base={}", base.to_rfc3339()))
        .arg("--file")
        .arg(script.path())
        .arg(&db.url)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    anyhow::ensure!(failed == 0, "pgbench transactions failed: {stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output: {stdout}"))
}

/// The booking transaction's writes as the server issues them (prepared statements,
/// one round trip each), each client on its own slots.
const FLOOR_SCRIPT: &str = r#"\set k :k + 1
\set n :k * :clients + :client_id
BEGIN;
INSERT INTO appointments (id, provider_id, patient_id, type_id, status, starts_at, ends_at,
    buffer_before_minutes, buffer_after_minutes, occupied_from, occupied_to, modality,
    hold_expires_at, reason_enc, booked_by)
VALUES (gen_random_uuid(), CAST(:provider AS uuid), CAST(:patient AS uuid), CAST(:kind AS uuid), 'booked',
    CAST(:base AS timestamptz) + make_interval(mins => 15 * CAST(:n AS int)),
    CAST(:base AS timestamptz) + make_interval(mins => 15 * CAST(:n AS int) + 15),
    0, 0, CAST(:base AS timestamptz), CAST(:base AS timestamptz), 'video',
    NULL, decode(repeat('ab', 60), 'hex'), CAST(:provider AS uuid))
RETURNING id AS appointment, starts_at, ends_at \gset
INSERT INTO events (kind, provider_id, patient_id, appointment_id, payload)
VALUES ('appointment.booked', CAST(:provider AS uuid), CAST(:patient AS uuid), CAST(:appointment AS uuid),
    jsonb_build_object('appointment_id', CAST(:appointment AS uuid), 'provider_id', CAST(:provider AS uuid),
        'patient_id', CAST(:patient AS uuid), 'type_id', CAST(:kind AS uuid), 'status', 'booked',
        'starts_at', CAST(:starts_at AS timestamptz), 'ends_at', CAST(:ends_at AS timestamptz), 'version', 1))
RETURNING id AS event \gset
INSERT INTO audit_events (actor_kind, actor_id, actor_role, action, resource_type, resource_id, patient_id,
    outcome, purpose, request_id, client_ip, user_agent, details)
VALUES ('user', CAST(:provider AS uuid), 'admin', 'create', 'appointment', CAST(:appointment AS uuid),
    CAST(:patient AS uuid), 'success', 'HOPERAT', 'bench-request-id-0000000000', '127.0.0.1', 'pgbench',
    '{"status": {"code": "booked"}}');
COMMIT;
"#;

fn find_pgbench() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::var("CAREWIRE_PG_BIN_DIR") {
        candidates.push(PathBuf::from(dir).join("pgbench"));
    }
    if let Ok(path) = std::env::var("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("pgbench")));
    }
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        candidates.extend(versions.flatten().map(|v| v.path().join("bin").join("pgbench")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Slot search over 30 days: a provider with 500 bookings in the range against one
/// with none, alternating requests so both see the same machine.
async fn search(server: &Server, patients: &[String], first_day: DateTime<Utc>) -> anyhow::Result<()> {
    let empty = Calendar::create(server, "search-empty").await?;
    let busy = Calendar::create(server, "search-busy").await?;
    // Every fifth slot of the range, by a few clients at once.
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (client, url, token) = (
                server.client.clone(),
                format!("{}/v1/appointments", server.base),
                server.admin_token.clone(),
            );
            let (busy, patients) = (busy.clone(), patients.to_vec());
            tokio::spawn(async move {
                for i in (t..SEARCH_BOOKINGS).step_by(8) {
                    let body = busy.booking(&patients[i % patients.len()], slot(first_day, i * 5));
                    let res = client.post(&url).bearer_auth(&token).json(&body).send().await?;
                    anyhow::ensure!(res.status() == 201, "booking for the search: {}", res.status());
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let from = first_day.to_rfc3339().replace('+', "%2B");
    let to = (first_day + chrono::Duration::days(SEARCH_DAYS))
        .to_rfc3339()
        .replace('+', "%2B");
    let url = |c: &Calendar| {
        format!(
            "{}/v1/providers/{}/slots?type={}&from={from}&to={to}",
            server.base, c.provider, c.kind
        )
    };
    let (empty_url, busy_url) = (url(&empty), url(&busy));
    let mut samples = [
        Samples::new(format!("slots, {SEARCH_DAYS} days, no bookings (baseline)")),
        Samples::new(format!("slots, {SEARCH_DAYS} days, {SEARCH_BOOKINGS} bookings")),
    ];
    let mut offered = [0usize; 2];
    for round in 0..SEARCH_REQUESTS + 20 {
        for (which, url) in [&empty_url, &busy_url].into_iter().enumerate() {
            let t = Instant::now();
            let res = server.client.get(url).send().await?;
            anyhow::ensure!(res.status() == 200, "slot search: {}", res.status());
            let body: Value = res.json().await?;
            let elapsed = t.elapsed();
            // The first rounds warm caches and connections.
            if round >= 20 {
                samples[which].record(elapsed);
            }
            offered[which] = body["slots"].as_array().map_or(0, Vec::len);
        }
    }
    println!("\nslot search over {SEARCH_DAYS} days, {SEARCH_REQUESTS} sequential requests each");
    println!("{}  ({} slots offered)", samples[0].line(), offered[0]);
    println!("{}  ({} slots offered)", samples[1].line(), offered[1]);
    println!(
        "latency ratio p50 {:.2}, p99 {:.2}",
        samples[1].percentile_ms(50.0) / samples[0].percentile_ms(50.0),
        samples[1].percentile_ms(99.0) / samples[0].percentile_ms(99.0)
    );
    Ok(())
}
