//! A database outage, as the server's clients see it.
//!
//! The server reaches PostgreSQL through a TCP proxy the benchmark can cut and restore.
//! Each round: `GET /v1/me` latency with the database up (the baseline, same run);
//! the database cut, then the latency of the 503s (the first requests, which find out,
//! and the steady state once the circuit breaker is open); the database restored, then
//! the time until `/readyz` answers 200 and until a patient's WebSocket receives an
//! event committed at the moment of the restore (the listener is back).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::db::ScratchDb;
use crate::report::Samples;
use crate::server::{self, Server};

/// Requests per phase of a round.
const REQUESTS: usize = 200;

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let binary = server::build(None)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(outage(&binary, rounds))
}

/// A proxy in front of PostgreSQL: `cut` kills open connections and refuses new ones.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: String) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, cut_rx) = watch::channel(0u64);
        let accepting = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: the database is "down"
                }
                let target = target.clone();
                let mut cut = cut_rx.clone();
                cut.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Proxy { port, up, cuts })
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `host:port` of a `postgres://` URL on TCP.
fn tcp_target(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| anyhow::anyhow!("set DATABASE_URL to a postgres:// URL on TCP for this benchmark"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    anyhow::ensure!(!host_port.is_empty(), "no host in DATABASE_URL");
    Ok(if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    })
}

async fn outage(binary: &std::path::Path, rounds: usize) -> anyhow::Result<()> {
    let db = ScratchDb::create("outage")?;
    let proxy = Proxy::start(tcp_target(&db.url)?).await?;
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let via_proxy = format!("{}{sep}host=127.0.0.1&port={}", db.url, proxy.port);
    let server = Server::start_with(
        binary,
        &db,
        &[
            ("DATABASE_URL", &via_proxy),
            ("CAREWIRE_SESSION_CHECK_TTL_MS", "0"),
        ],
    )
    .await?;
    let token = server.patient_account("outage-patient@example.test").await?;
    let me: Value = server
        .client
        .get(format!("{}/v1/me", server.base))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let account = me["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no id in {me}"))?
        .to_owned();

    let mut up = Samples::new("GET /v1/me, database up (baseline)");
    let mut finding_out = Samples::new("503 while the breaker trips (first 20 after the cut)");
    let mut failing_fast = Samples::new("503 with the breaker open");
    let mut to_ready = Samples::new("database back -> /readyz 200");
    let mut to_event = Samples::new("database back -> event on a WebSocket");
    let mut direct = db.connect()?;
    for _ in 0..rounds {
        let mut ws = crate::realtime::open(&server, &token, "").await?;
        for _ in 0..REQUESTS {
            let started = Instant::now();
            let status = get_me(&server, &token).await?;
            anyhow::ensure!(status == 200, "database up: {status}");
            up.record(started.elapsed());
        }
        proxy.cut();
        for i in 0..20 + REQUESTS {
            let started = Instant::now();
            let status = get_me(&server, &token).await?;
            anyhow::ensure!(status == 503, "database down: {status}");
            if i < 20 {
                finding_out.record(started.elapsed());
            } else {
                failing_fast.record(started.elapsed());
            }
        }
        proxy.restore();
        let back = Instant::now();
        // Committed straight away, not through the proxy: the socket shows it once the
        // server's listener is connected again.
        carewire::outbox::emit_for_account(
            &mut direct,
            "notification",
            account.parse()?,
            json!({"bench": "outage"}),
        )?;
        let ready = async {
            while server
                .client
                .get(format!("{}/readyz", server.base))
                .send()
                .await
                .map(|r| r.status() != 200)
                .unwrap_or(true)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            back.elapsed()
        };
        let event = async {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Text(text) = message
                    && text.contains("\"outage\"")
                {
                    return Some(back.elapsed());
                }
            }
            None
        };
        let (ready, event) =
            tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(ready, event) })
                .await
                .map_err(|_| anyhow::anyhow!("the server did not recover within 30 s"))?;
        to_ready.record(ready);
        to_event.record(event.ok_or_else(|| anyhow::anyhow!("the socket closed before the event"))?);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("outage: {rounds} rounds, {REQUESTS} requests per phase");
    for samples in [&up, &finding_out, &failing_fast, &to_ready, &to_event] {
        println!("  {}", samples.line());
    }
    Ok(())
}

async fn get_me(server: &Server, token: &str) -> anyhow::Result<u16> {
    Ok(server
        .client
        .get(format!("{}/v1/me", server.base))
        .bearer_auth(token)
        .send()
        .await?
        .status()
        .as_u16())
}
