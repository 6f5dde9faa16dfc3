//! Patient records: what field encryption costs.
//!
//! 1. Per field: sealing and opening a 20-byte and a 200-byte value, against copying
//!    the same bytes (the baseline: what storing the field in clear costs here).
//! 2. Reading a patient over HTTP (`GET /v1/patients/{id}`, 12 sealed fields, audited)
//!    with a release server, against the same server built with the
//!    `insecure-plaintext-fields` feature (fields stored in clear), in the same run.
//! 3. Rewrap: rows per second re-encrypted to a new key version.

use std::time::{Duration, Instant};

use carewire::crypto::{Crypto, CryptoOptions, Kek, field, rotation};
use serde_json::json;

use crate::db::ScratchDb;
use crate::report::Samples;
use crate::server::{self, Server};

const KEK_BYTES: [u8; 32] = [7; 32];

pub fn run(seconds: u64, clients: usize, patients: usize) -> anyhow::Result<()> {
    per_field()?;

    let encrypted = server::build(None)?;
    let plaintext = server::build(Some("target/bench-plaintext"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut results = Vec::new();
    let mut kept = None;
    for (label, binary) in [("encrypted", &encrypted), ("plaintext build", &plaintext)] {
        let db = ScratchDb::create(if label == "encrypted" {
            "rec_enc"
        } else {
            "rec_plain"
        })?;
        let samples = runtime.block_on(read_latency(label, binary, &db, seconds, clients, patients))?;
        results.push(samples);
        if label == "encrypted" {
            kept = Some(db);
        }
    }
    let (enc, plain) = (&results[0], &results[1]);
    println!("\nreading a patient over HTTP, {clients} clients, {seconds} s each, {patients} patients");
    println!("{}", enc.0.line());
    println!("{}", plain.0.line());
    println!(
        "throughput: encrypted {:.0} req/s, plaintext build {:.0} req/s; latency ratio p50 {:.2}, p99 {:.2} (goal <= 1.3)",
        enc.1,
        plain.1,
        enc.0.percentile_ms(50.0) / plain.0.percentile_ms(50.0),
        enc.0.percentile_ms(99.0) / plain.0.percentile_ms(99.0),
    );

    if let Some(db) = kept {
        rewrap(&db)?;
    }
    Ok(())
}

fn per_field() -> anyhow::Result<()> {
    let db = ScratchDb::create("rec_micro")?;
    let crypto = Crypto::open(&db.url, Kek::from_bytes(KEK_BYTES), CryptoOptions::default())?;
    let ctx = field("patients", "legal_family_name", uuid::Uuid::now_v7());
    println!("per field, 200000 operations each (ns per operation)");
    for size in [20usize, 200] {
        let plaintext = vec![b'a'; size];
        let n = 200_000u32;
        let started = Instant::now();
        let mut sealed = Vec::new();
        for _ in 0..n {
            sealed = crypto.encrypt(&ctx, std::hint::black_box(&plaintext))?;
        }
        let seal = started.elapsed() / n;
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(crypto.decrypt(&ctx, std::hint::black_box(&sealed))?);
        }
        let open = started.elapsed() / n;
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(std::hint::black_box(&plaintext).clone());
        }
        let copy = started.elapsed() / n;
        println!(
            "  {size:>3}-byte field: seal {:>6} ns, open {:>6} ns; baseline copy {:>4} ns",
            seal.as_nanos(),
            open.as_nanos(),
            copy.as_nanos()
        );
    }
    Ok(())
}

async fn read_latency(
    label: &str,
    binary: &std::path::Path,
    db: &ScratchDb,
    seconds: u64,
    clients: usize,
    patients: usize,
) -> anyhow::Result<(Samples, f64)> {
    let server = Server::start(binary, db).await?;
    let mut ids = Vec::with_capacity(patients);
    for i in 0..patients {
        let res = server
            .post(
                "/v1/patients",
                &json!({
                    "legal_name": { "given": format!("Given{i}"), "family": format!("Family{i}") },
                    "preferred_name": "Pat",
                    "birth_date": "1980-05-17",
                    "sex": "female",
                    "gender_identity": "woman",
                    "phone": format!("+1555{i:07}"),
                    "email": format!("patient{i}@example.test"),
                    "address": { "lines": [format!("{i} Main Street")], "city": "Springfield", "region": "IL", "postal_code": "62701", "country": "US" },
                    "mrn": format!("MRN{i:08}"),
                    "insurance_id": format!("INS{i:08}"),
                    "emergency_contact": { "name": "Sam Doe", "relationship": "partner", "phone": "+15550000000" },
                }),
            )
            .await?;
        ids.push(
            res["id"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("create failed: {res}"))?
                .to_owned(),
        );
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, base, token, ids) = (
                server.client.clone(),
                server.base.clone(),
                server.admin_token.clone(),
                ids.clone(),
            );
            tokio::spawn(async move {
                let mut samples = Samples::new("");
                let mut i = c;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let res = client
                        .get(format!("{base}/v1/patients/{}", ids[i % ids.len()]))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    let ok = match res {
                        Ok(res) => res.status() == 200 && res.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        samples.record(t.elapsed());
                    }
                    i += clients;
                }
                samples
            })
        })
        .collect();
    let mut all = Samples::new(format!("GET /v1/patients/{{id}}, {label}"));
    for task in tasks {
        all.merge(&task.await?);
    }
    let rate = all.count() as f64 / started.elapsed().as_secs_f64();
    Ok((all, rate))
}

fn rewrap(db: &ScratchDb) -> anyhow::Result<()> {
    let crypto = Crypto::open(&db.url, Kek::from_bytes(KEK_BYTES), CryptoOptions::default())?;
    let mut conn = db.connect()?;
    rotation::rotate(&crypto, &mut conn)?;
    let started = Instant::now();
    let report = rotation::rewrap(&crypto, &mut conn, 500, |_| {})?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\nrewrap: {} fields in {} rows ({} rows scanned) in {:.2} s: {:.0} rows/s, {:.0} fields/s",
        report.fields_rewrapped,
        report.rows_rewrapped,
        report.rows_scanned,
        secs,
        report.rows_rewrapped as f64 / secs,
        report.fields_rewrapped as f64 / secs
    );
    Ok(())
}
