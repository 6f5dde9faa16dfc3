//! The real-time gateway: what sockets cost, how fast events reach them, and how fast
//! a burst of reminders drains.
//!
//! 1. Memory: the server's resident memory per idle authenticated WebSocket, with
//!    `connections` sockets open, against the same number of idle HTTP keep-alive
//!    connections to another server process (the baseline), in the same run.
//! 2. Commit-to-client latency: `watchers` sockets follow one provider's slots; the
//!    benchmark commits slot changes (an outbox row, as a booking writes it) and times
//!    each arrival from the commit. Baseline: an application-level ping round trip on
//!    the same kind of socket.
//! 3. Reminder burst: `reminders` reminders due within the same minute, two server
//!    instances dispatching; time until all are sent, and how late each went out.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::db::ScratchDb;
use crate::report::Samples;
use crate::server::{self, Server};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn run(connections: usize, watchers: usize, reminders: usize) -> anyhow::Result<()> {
    let binary = server::build(None)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // `--connections 0` skips the memory measurement (minutes at 19,000 sockets).
        if connections > 0 {
            memory(&binary, connections).await?;
        }
        latency(&binary, watchers).await?;
        burst(&binary, reminders).await
    })
}

pub(crate) async fn open(server: &Server, token: &str, query: &str) -> anyhow::Result<Ws> {
    let url = format!("{}/v1/ws?{query}", server.base.replace("http://", "ws://"));
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("carewire.v1, bearer.{token}").parse()?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    // The welcome and the unread notifications.
    for _ in 0..2 {
        ws.next().await;
    }
    Ok(ws)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

/// Opens `n` connections with at most 256 handshakes in flight.
async fn open_many<T, F, Fut>(n: usize, open_one: F) -> anyhow::Result<Vec<T>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut opened = Vec::with_capacity(n);
    let mut pending = futures_util::stream::iter((0..n).map(|_| open_one())).buffer_unordered(256);
    while let Some(next) = pending.next().await {
        opened.push(next?);
    }
    Ok(opened)
}

async fn memory(binary: &std::path::Path, n: usize) -> anyhow::Result<()> {
    println!("memory: {n} idle connections (this machine allows 20,000 open files per process)");
    // Baseline: idle HTTP keep-alive connections, each after one request.
    let per_http = {
        let db = ScratchDb::create("rt_http")?;
        let server = Server::start(binary, &db).await?;
        let addr = server.base.trim_start_matches("http://").to_owned();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss_kib(server.pid())?;
        let conns = open_many(n, || {
            let addr = addr.clone();
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = TcpStream::connect(&addr).await?;
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nhost: bench\r\n\r\n")
                    .await?;
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await?;
                anyhow::Ok(stream)
            }
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(server.pid())?;
        drop(conns);
        (after.saturating_sub(before)) as f64 / n as f64
    };
    let db = ScratchDb::create("rt_mem")?;
    let server = Server::start(binary, &db).await?;
    let token = server.patient_account("idle@bench.test").await?;
    let first = open(&server, &token, "").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(server.pid())?;
    let sockets = open_many(n, || open(&server, &token, "")).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server.pid())?;
    let per_ws = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "  resident memory per idle connection: WebSocket (authenticated) {per_ws:.1} KiB (goal <= 16), \
         baseline HTTP keep-alive {per_http:.1} KiB; server RSS {} MiB with {} sockets",
        after / 1024,
        sockets.len() + 1
    );
    drop((first, sockets));
    Ok(())
}

async fn latency(binary: &std::path::Path, watchers: usize) -> anyhow::Result<()> {
    const CHANGES: usize = 200;
    let db = ScratchDb::create("rt_lat")?;
    let server = Server::start(binary, &db).await?;
    let token = server.patient_account("watcher@bench.test").await?;
    let provider = uuid::Uuid::now_v7();
    let topic = format!("topics=provider:{provider}:slots");
    let sockets = open_many(watchers, || open(&server, &token, &topic)).await?;

    // Each watcher notes when each change arrived; latencies are taken against the
    // commit times at the end (an event may arrive before its commit time is noted).
    let arrivals: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut arrived = vec![None::<Instant>; CHANGES];
                let mut seen = 0;
                while seen < CHANGES {
                    let text = match ws.next().await {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(_)) => continue, // the server's heartbeat pings
                        _ => break,
                    };
                    let at = Instant::now();
                    let value: Value = serde_json::from_str(&text).unwrap_or_default();
                    // The change's number rides in its `starts_at` ("t#<n>").
                    let n = value["data"]["starts_at"]
                        .as_str()
                        .and_then(|s| s.split('#').nth(1))
                        .and_then(|n| n.parse::<usize>().ok());
                    if let Some(slot) = n.and_then(|n| arrived.get_mut(n)) {
                        *slot = Some(at);
                        seen += 1;
                    }
                }
                arrived
            })
        })
        .collect();

    let mut conn = db.connect()?;
    let mut committed = Vec::with_capacity(CHANGES);
    for n in 0..CHANGES {
        // The outbox row a hold writes, committed here so the clock starts at commit.
        diesel::sql_query(
            "INSERT INTO events (kind, provider_id, payload) VALUES ('slot.held', $1, jsonb_build_object('starts_at', $2))",
        )
        .bind::<diesel::sql_types::Uuid, _>(provider)
        .bind::<diesel::sql_types::Text, _>(format!("t#{n}"))
        .execute(&mut conn)?;
        committed.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut all = Samples::new(format!("commit -> {watchers} watchers, {CHANGES} slot changes"));
    let mut missing = 0;
    for task in arrivals {
        for (n, arrived) in task.await?.into_iter().enumerate() {
            match arrived {
                Some(at) => all.record(at.saturating_duration_since(committed[n])),
                None => missing += 1,
            }
        }
    }
    anyhow::ensure!(missing == 0, "{missing} deliveries never arrived");

    // Baseline: an application ping round trip on one socket, paced under the
    // per-socket message rate (20/s by default), which would otherwise drop pings.
    let mut ws = open(&server, &token, "").await?;
    let mut ping = Samples::new("baseline: ping -> pong on one socket");
    for i in 0..CHANGES {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let at = Instant::now();
        ws.send(Message::text(
            json!({ "type": "ping", "id": i.to_string() }).to_string(),
        ))
        .await?;
        while let Some(Ok(message)) = ws.next().await {
            if matches!(message, Message::Text(ref t) if t.contains("pong")) {
                break;
            }
        }
        ping.record(at.elapsed());
    }
    println!("\ncommit-to-client latency");
    println!("{}", all.line());
    println!("{}", ping.line());
    Ok(())
}

async fn burst(binary: &std::path::Path, reminders: usize) -> anyhow::Result<()> {
    let db = ScratchDb::create("rt_burst")?;
    let poll = [("CAREWIRE_REMINDER_POLL_MS", "250")];
    let first = Server::start_with(binary, &db, &poll).await?;
    // Arrange through the API: a provider with a type, a patient with an account.
    let provider: Value = first
        .post(
            "/v1/admin/users",
            &json!({ "email": "dr@bench.test", "password": server::PASSWORD, "role": "provider", "display_name": "Dr Bench" }),
        )
        .await?;
    let provider_id = provider["id"].as_str().unwrap_or_default().to_owned();
    first
        .post(
            "/v1/providers",
            &json!({ "account_id": provider_id, "display_name": "Dr Bench", "time_zone": "UTC" }),
        )
        .await?;
    let kind: Value = first
        .post(
            &format!("/v1/providers/{provider_id}/appointment-types"),
            &json!({ "name": "Check-in", "duration_minutes": 15, "modality": "video" }),
        )
        .await?;
    let patient_token = first.patient_account("burst@bench.test").await?;
    let patient: Value = first
        .client
        .post(format!("{}/v1/patients", first.base))
        .bearer_auth(&patient_token)
        .json(&json!({ "legal_name": { "given": "Burst", "family": "Bench" }, "birth_date": "1980-01-01" }))
        .send()
        .await?
        .json()
        .await?;

    // 100,000 booked appointments a year out, and their reminders, all due within the
    // minute starting 30 s from now (bulk-loaded: triggers off for the load only).
    let mut conn = db.connect()?;
    let due_from = chrono::Utc::now() + chrono::Duration::seconds(30);
    conn.transaction(|conn| {
        diesel::sql_query("SET LOCAL session_replication_role = replica").execute(conn)?;
        diesel::sql_query(
            "INSERT INTO appointments (id, provider_id, patient_id, type_id, status, starts_at, ends_at, \
                 occupied_from, occupied_to, modality, booked_by) \
             SELECT gen_random_uuid(), $1, $2, $3, 'booked', s, s + interval '15 minutes', s, s + interval '15 minutes', 'video', $1 \
               FROM (SELECT now() + interval '400 days' + g * interval '15 minutes' AS s FROM generate_series(1, $4) g) slots",
        )
        .bind::<diesel::sql_types::Uuid, _>(uuid::Uuid::parse_str(&provider_id)?)
        .bind::<diesel::sql_types::Uuid, _>(uuid::Uuid::parse_str(patient["id"].as_str().unwrap_or_default())?)
        .bind::<diesel::sql_types::Uuid, _>(uuid::Uuid::parse_str(kind["id"].as_str().unwrap_or_default())?)
        .bind::<diesel::sql_types::Integer, _>(i32::try_from(reminders)?)
        .execute(conn)?;
        diesel::sql_query(
            "INSERT INTO reminder_jobs (id, appointment_id, appointment_version, offset_minutes, due_at) \
             SELECT gen_random_uuid(), id, 1, 60, $1 + random() * interval '60 seconds' FROM appointments",
        )
        .bind::<diesel::sql_types::Timestamptz, _>(due_from)
        .execute(conn)?;
        anyhow::Ok(())
    })?;
    let second = Server::start_with(binary, &db, &poll).await?;

    #[derive(QueryableByName)]
    struct Progress {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        pending: i64,
    }
    loop {
        let p: Progress =
            diesel::sql_query("SELECT count(*) AS pending FROM reminder_jobs WHERE status = 'pending'")
                .get_result(&mut conn)?;
        if p.pending == 0 {
            break;
        }
        anyhow::ensure!(
            chrono::Utc::now() < due_from + chrono::Duration::minutes(10),
            "reminders still pending after 10 min"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    #[derive(QueryableByName)]
    struct Lag {
        #[diesel(sql_type = diesel::sql_types::Double)]
        p50: f64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        p99: f64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        max: f64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        drained_after: f64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        sent: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        notifications: i64,
    }
    // processed_at is each instance's clock at dispatch: the same machine here.
    let lag: Lag = diesel::sql_query(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - due_at))::float8 AS p50, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - due_at))::float8 AS p99, \
                max(extract(epoch FROM processed_at - due_at))::float8 AS max, \
                extract(epoch FROM max(processed_at) - max(due_at))::float8 AS drained_after, \
                count(*) FILTER (WHERE status = 'sent') AS sent, \
                (SELECT count(*) FROM notifications) AS notifications \
           FROM reminder_jobs",
    )
    .get_result(&mut conn)?;
    println!(
        "\nreminder burst: {reminders} reminders due within one minute, 2 instances (poll 250 ms)\n  \
         sent {} (notifications {}), lag after due time p50 {:.2} s, p99 {:.2} s, max {:.2} s (goal p99 < 2 s); \
         last sent {:.2} s after the last was due",
        lag.sent, lag.notifications, lag.p50, lag.p99, lag.max, lag.drained_after
    );
    drop((first, second));
    Ok(())
}
