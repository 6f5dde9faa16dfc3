//! The audit log's cost and speed.
//!
//! 1. Writers: `writers` threads, each committing transactions that insert one row;
//!    first without an audit event (the baseline), then with one (the row plus its
//!    audit event, as every feature writes them) while the sealer runs.
//! 2. Sealing lag: time from an event being recorded to its being sealed, over every
//!    event of the audited run.
//! 3. Verification: entries per second for the whole log read from PostgreSQL, and
//!    for the same entries already in memory (the chain arithmetic alone).

use std::sync::Arc;
use std::time::{Duration, Instant};

use carewire::audit::sealer::{Sealer, SealerConfig};
use carewire::audit::verification::Readers;
use carewire_audit::checkpoint::CheckpointSigner;
use carewire_audit::event::{Actor, AuditEvent, Code, DetailValue, action, purpose, resource};
use carewire_audit::store;
use carewire_audit::verify::{CheckpointSet, verify};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::ScratchDb;
use crate::report::Samples;

pub fn run(duration: Duration, writers: usize) -> anyhow::Result<()> {
    let db = ScratchDb::create("audit")?;
    diesel::sql_query(
        "CREATE TABLE bench_items (id uuid PRIMARY KEY, owner uuid NOT NULL, payload bytea NOT NULL, \
         created_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut db.connect()?)?;

    let (baseline, baseline_tps) = write_phase(&db, writers, duration, false)?;

    let dir = tempfile::tempdir()?;
    let signer = Arc::new(CheckpointSigner::from_seed(&[42; 32]));
    let sealer = Sealer::spawn(
        SealerConfig {
            database_url: db.url.clone(),
            checkpoint_file: dir.path().join("checkpoints.jsonl"),
            seal_interval: Duration::from_millis(100),
            checkpoint_interval: Duration::from_secs(5),
        },
        signer.clone(),
    )?;
    let (audited, audited_tps) = write_phase(&db, writers, duration, true)?;
    let mut conn = db.connect()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while store::unsealed_count(&mut conn)? > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the sealer did not catch up within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sealer.stop();

    #[derive(QueryableByName)]
    struct Lag {
        #[diesel(sql_type = diesel::sql_types::Double)]
        p50: f64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        p99: f64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        max: f64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let lag: Lag = diesel::sql_query(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l) AS p50, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY l) AS p99, max(l) AS max, count(*) AS n \
         FROM (SELECT (extract(epoch FROM c.sealed_at - e.recorded_at) * 1000)::float8 AS l FROM audit_chain c JOIN audit_events e ON e.id = c.event_id) t",
    )
    .get_result(&mut conn)?;

    // Verification from the database.
    let keys = [signer.verifying_key()];
    let started = Instant::now();
    let report = carewire::audit::verification::verify_database(
        &mut conn,
        Readers::One,
        &keys,
        Vec::new(),
        None,
        |_, _| {},
    )?
    .map_err(|f| anyhow::anyhow!("the benchmark's own log does not verify: {f}"))?;
    let from_db = started.elapsed();
    let entries = report.summary.entries;

    // The same entries in memory: the chain alone.
    let mut in_memory = Vec::with_capacity(entries as usize);
    let mut after = 0;
    let (mut loading, mut decoding) = (Duration::ZERO, Duration::ZERO);
    loop {
        let t = Instant::now();
        let page = store::sealed_page(&mut conn, after, None, 10_000)?;
        loading += t.elapsed();
        let Some(last) = page.last() else { break };
        after = last.seq as u64;
        let t = Instant::now();
        for row in page {
            in_memory.push(row.entry()?);
        }
        decoding += t.elapsed();
    }
    let checkpoints = CheckpointSet::new(
        store::checkpoints(&mut conn)?
            .into_iter()
            .map(|c| (c, carewire_audit::Origin::Database)),
    );
    let in_memory_time = verify_in_memory(in_memory, &checkpoints, &signer)?;

    println!("audit log, {writers} writers, {} s per run", duration.as_secs());
    println!(
        "reading {entries} entries: query and row decoding {:.2} s, event decoding {:.2} s",
        loading.as_secs_f64(),
        decoding.as_secs_f64()
    );
    println!("{}", baseline.line());
    println!("{}", audited.line());
    println!(
        "throughput: baseline {baseline_tps:.0} tx/s, with audit {audited_tps:.0} tx/s, ratio {:.2} (goal >= 0.8)",
        audited_tps / baseline_tps
    );
    println!(
        "sealing lag over {} events: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 < 1000 ms)",
        lag.n, lag.p50, lag.p99, lag.max
    );
    println!(
        "verify {entries} entries: from PostgreSQL {:.0} entries/s ({:.2} s); in memory {:.0} entries/s (goal >= 500000/s)",
        entries as f64 / from_db.as_secs_f64(),
        from_db.as_secs_f64(),
        entries as f64 / in_memory_time.as_secs_f64()
    );
    Ok(())
}

fn event(writer: usize, i: u64) -> AuditEvent {
    AuditEvent::new(
        Actor::User {
            id: Uuid::from_u128(writer as u128 + 1),
            role: Code::new("provider"),
        },
        action::CREATE,
        resource::APPOINTMENT,
        purpose::OPERATIONS,
    )
    .resource(Uuid::now_v7())
    .patient(Uuid::from_u128(u128::from(i % 1000) + 10_000))
    .origin(
        Some("0190f0e2a1b27000800000000000abcd"),
        Some("203.0.113.7".parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))),
        Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"),
    )
    .detail(Code::new("slot_minutes"), DetailValue::Count(30))
    .detail(Code::new("status"), DetailValue::Code(Code::new("booked")))
}

/// Runs the writers for `duration`; returns per-transaction latencies and throughput.
fn write_phase(
    db: &ScratchDb,
    writers: usize,
    duration: Duration,
    audited: bool,
) -> anyhow::Result<(Samples, f64)> {
    let started = Instant::now();
    let deadline = started + duration;
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let url = db.url.clone();
            std::thread::spawn(move || -> anyhow::Result<Samples> {
                let mut conn = PgConnection::establish(&url)?;
                let mut samples = Samples::new("");
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    conn.transaction(|conn| {
                        diesel::sql_query("INSERT INTO bench_items (id, owner, payload) VALUES ($1, $2, $3)")
                            .bind::<diesel::sql_types::Uuid, _>(Uuid::now_v7())
                            .bind::<diesel::sql_types::Uuid, _>(Uuid::from_u128(w as u128))
                            .bind::<diesel::sql_types::Bytea, _>(vec![7u8; 64])
                            .execute(conn)?;
                        if audited {
                            store::record(conn, &event(w, i))?;
                        }
                        Ok::<_, diesel::result::Error>(())
                    })?;
                    samples.record(t.elapsed());
                    i += 1;
                }
                Ok(samples)
            })
        })
        .collect();
    let name = if audited {
        "transaction: insert a row + its audit event (sealer running)"
    } else {
        "baseline transaction: insert a row, no audit event"
    };
    let mut all = Samples::new(name);
    for thread in threads {
        let samples = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        all.merge(&samples);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tps = all.count() as f64 / elapsed;
    Ok((all, tps))
}

/// A log of `entries` sealed events (written with SQL, sealed by the real sealer's
/// batches, checkpointed at the end), then: reading every page without verifying
/// (the floor), verifying the same entries in memory, and `verify_database` end to
/// end, as `carewire audit verify` runs it.
pub fn verify_run(entries: u64) -> anyhow::Result<()> {
    let db = ScratchDb::create("audit_verify")?;
    let mut conn = db.connect()?;
    let started = Instant::now();
    let chunk = 100_000u64;
    let mut written = 0;
    while written < entries {
        let n = chunk.min(entries - written);
        // Shaped like a booking's event: a user, ids, the request's origin, a count.
        diesel::sql_query(format!(
            "INSERT INTO audit_events (actor_kind, actor_id, actor_role, action, resource_type, resource_id, \
                 patient_id, outcome, purpose, request_id, client_ip, user_agent, details) \
             SELECT 'user', gen_random_uuid(), 'provider', 'create', 'appointment', gen_random_uuid(), \
                 gen_random_uuid(), 'success', 'HOPERAT', md5(i::text), '203.0.113.7', \
                 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36', \
                 jsonb_build_object('slot_minutes', jsonb_build_object('count', 30)) \
             FROM generate_series(1, {n}) AS i"
        ))
        .execute(&mut conn)?;
        written += n;
    }
    let writing = started.elapsed();
    let started = Instant::now();
    let mut head = store::head(&mut conn)?;
    loop {
        let sealed = store::seal_batch(&mut conn, 50_000, Some(head))?;
        if sealed.count == 0 {
            break;
        }
        head = sealed.head;
    }
    let sealing = started.elapsed();
    anyhow::ensure!(head.size == entries, "sealed {} of {entries}", head.size);
    let signer = CheckpointSigner::from_seed(&[42; 32]);
    let now = chrono::Utc::now();
    let checkpoint = signer.sign(carewire_audit::Checkpoint {
        size: head.size,
        head: head.hash,
        at: chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now),
    });
    store::store_checkpoint(&mut conn, &checkpoint)?;
    diesel::sql_query("VACUUM ANALYZE audit_events").execute(&mut conn)?;
    diesel::sql_query("VACUUM ANALYZE audit_chain").execute(&mut conn)?;
    let keys = [signer.verifying_key()];

    // The floor: every page read and decoded, nothing verified.
    let started = Instant::now();
    let mut in_memory = Vec::with_capacity(entries as usize);
    let mut after = 0;
    loop {
        let page = store::sealed_page(&mut conn, after, None, 50_000)?;
        let Some(last) = page.last() else { break };
        after = last.seq as u64;
        for stored in page {
            in_memory.push(stored.entry()?);
        }
    }
    let reading = started.elapsed();

    let checkpoints = CheckpointSet::new([(checkpoint.clone(), carewire_audit::Origin::External)]);
    let in_memory_time = verify_in_memory(in_memory, &checkpoints, &signer)?;

    // End to end as `carewire audit verify` runs it: one reader (the baseline, as
    // before readers ran at once), then 2 and 4 readers, 3 runs each, in this run.
    let mut measure = |readers: Readers<'_>| -> anyhow::Result<Vec<f64>> {
        let mut runs = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let report = carewire::audit::verification::verify_database(
                &mut conn,
                readers,
                &keys,
                vec![checkpoint.clone()],
                None,
                |_, _| {},
            )?
            .map_err(|f| anyhow::anyhow!("the benchmark's own log does not verify: {f}"))?;
            anyhow::ensure!(report.summary.entries == entries);
            runs.push(started.elapsed().as_secs_f64());
        }
        runs.sort_by(f64::total_cmp);
        Ok(runs)
    };
    let one = measure(Readers::One)?;
    let parallel: Vec<(usize, Vec<f64>)> = [2, 4]
        .into_iter()
        .map(|jobs| {
            measure(Readers::Parallel {
                url: &db.url,
                jobs,
                page: carewire::audit::verification::PAGE_ENTRIES,
            })
            .map(|runs| (jobs, runs))
        })
        .collect::<anyhow::Result<_>>()?;
    let rate = |secs: f64| entries as f64 / secs;
    println!(
        "audit verify over {entries} entries (written in {:.1} s, sealed in {:.1} s: {:.0} entries/s)",
        writing.as_secs_f64(),
        sealing.as_secs_f64(),
        rate(sealing.as_secs_f64())
    );
    println!(
        "read and decode only (floor, one connection): {:.0} entries/s; verify in memory: {:.0} entries/s",
        rate(reading.as_secs_f64()),
        rate(in_memory_time.as_secs_f64())
    );
    for (label, runs) in std::iter::once(("1 reader (baseline)".to_owned(), &one)).chain(
        parallel
            .iter()
            .map(|(jobs, runs)| (format!("{jobs} readers"), runs)),
    ) {
        println!(
            "verify end to end from PostgreSQL, {label}, 3 runs: best {:.0} entries/s, median {:.0} entries/s ({:.2} s) (goal >= 500000/s; {} CPUs here)",
            rate(runs[0]),
            rate(runs[1]),
            runs[1],
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        );
    }
    Ok(())
}

/// Time to verify entries already in memory: the chain and the checkpoints alone.
fn verify_in_memory(
    entries: Vec<carewire_audit::Entry>,
    checkpoints: &CheckpointSet,
    signer: &CheckpointSigner,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    verify::<_, ()>(
        entries.into_iter().map(Ok),
        checkpoints,
        &[signer.verifying_key()],
        None,
        |_| Ok(None),
        |_| {},
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(started.elapsed())
}
