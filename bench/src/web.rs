//! The browser client: what serving it costs.
//!
//! 1. Per request, with concurrent clients: every file of the client fetched in full
//!    (a first visit) and revalidated with `If-None-Match` (a return visit: 304, no
//!    body), against `GET /healthz` (the baseline: the cheapest answer the server
//!    gives), in the same run.
//! 2. A whole page load as a browser does it: `/`, then every other file over six
//!    connections at once; first visits and return visits.

use std::time::{Duration, Instant};

use carewire::http::web::{ASSETS, INDEX};
use futures_util::future::join_all;
use reqwest::header::{ETAG, IF_NONE_MATCH};

use crate::db::ScratchDb;
use crate::report::Samples;
use crate::server::{self, Server};

/// Browsers open at most six HTTP/1.1 connections per host.
const BROWSER_CONNECTIONS: usize = 6;

pub fn run(seconds: u64, clients: usize, page_loads: usize) -> anyhow::Result<()> {
    let binary = server::build(None)?;
    let db = ScratchDb::create("web")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = Server::start(&binary, &db).await?;
        // The page first, as a browser asks for it.
        let paths: Vec<String> = std::iter::once("/".to_owned())
            .chain(
                ASSETS
                    .iter()
                    .filter(|a| a.path != INDEX)
                    .map(|a| a.path.to_owned()),
            )
            .collect();
        let bytes: usize = ASSETS.iter().map(|a| a.bytes.len()).sum();
        let etags = etags(&server, &paths).await?;
        println!("the client: {} files, {} KiB", paths.len(), bytes / 1024);

        let duration = Duration::from_secs(seconds);
        let health = per_request(
            &server,
            "GET /healthz (baseline)",
            &["/healthz".to_owned()],
            None,
            clients,
            duration,
        )
        .await;
        let full = per_request(
            &server,
            "GET a client file, in full",
            &paths,
            None,
            clients,
            duration,
        )
        .await;
        let revalidated = per_request(
            &server,
            "GET a client file, revalidated (304)",
            &paths,
            Some(&etags),
            clients,
            duration,
        )
        .await;
        println!("\nper request, {clients} clients, {seconds} s each");
        for samples in [&health, &full, &revalidated] {
            println!("{}", samples.line());
        }
        println!(
            "ratio to the baseline: in full p50 {:.2} p99 {:.2}; revalidated p50 {:.2} p99 {:.2}",
            full.percentile_ms(50.0) / health.percentile_ms(50.0),
            full.percentile_ms(99.0) / health.percentile_ms(99.0),
            revalidated.percentile_ms(50.0) / health.percentile_ms(50.0),
            revalidated.percentile_ms(99.0) / health.percentile_ms(99.0),
        );

        println!(
            "\na page load (/ then the other files over {BROWSER_CONNECTIONS} connections), {page_loads} each"
        );
        println!(
            "{}",
            page_load(
                &server,
                "first visit (every file in full)",
                &paths,
                None,
                page_loads
            )
            .await?
            .line()
        );
        println!(
            "{}",
            page_load(
                &server,
                "return visit (every file revalidated)",
                &paths,
                Some(&etags),
                page_loads
            )
            .await?
            .line()
        );
        anyhow::Ok(())
    })
}

/// Each file's ETag, in `paths` order.
async fn etags(server: &Server, paths: &[String]) -> anyhow::Result<Vec<String>> {
    let mut etags = Vec::with_capacity(paths.len());
    for path in paths {
        let res = server.client.get(format!("{}{path}", server.base)).send().await?;
        anyhow::ensure!(res.status() == 200, "GET {path}: {}", res.status());
        let etag = res
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        etags.push(etag);
    }
    Ok(etags)
}

/// `clients` loops, each with its own connection, cycling through `paths` for `duration`.
async fn per_request(
    server: &Server,
    name: &str,
    paths: &[String],
    etags: Option<&[String]>,
    clients: usize,
    duration: Duration,
) -> Samples {
    let deadline = Instant::now() + duration;
    let loops = (0..clients).map(|c| {
        let client = reqwest::Client::new();
        let base = server.base.clone();
        async move {
            let mut samples = Samples::new(name);
            let mut i = c;
            while Instant::now() < deadline {
                let k = i % paths.len();
                i += 1;
                let started = Instant::now();
                if fetch(&client, &base, &paths[k], etags.map(|e| e[k].as_str()))
                    .await
                    .is_ok()
                {
                    samples.record(started.elapsed());
                }
            }
            samples
        }
    });
    let mut all = Samples::new(name);
    for samples in join_all(loops).await {
        all.merge(&samples);
    }
    all
}

/// One request, with its body read to the end; an error unless 200 (or 304 when
/// revalidating).
async fn fetch(client: &reqwest::Client, base: &str, path: &str, etag: Option<&str>) -> anyhow::Result<()> {
    let mut request = client.get(format!("{base}{path}"));
    if let Some(etag) = etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    let res = request.send().await?;
    let expected = if etag.is_some() { 304 } else { 200 };
    anyhow::ensure!(res.status() == expected, "GET {path}: {}", res.status());
    res.bytes().await?;
    Ok(())
}

async fn page_load(
    server: &Server,
    name: &str,
    paths: &[String],
    etags: Option<&[String]>,
    loads: usize,
) -> anyhow::Result<Samples> {
    let mut samples = Samples::new(name);
    for _ in 0..loads {
        // A fresh browser: new connections each time.
        let clients: Vec<reqwest::Client> =
            (0..BROWSER_CONNECTIONS).map(|_| reqwest::Client::new()).collect();
        let started = Instant::now();
        fetch(&clients[0], &server.base, &paths[0], etags.map(|e| e[0].as_str())).await?;
        let lanes = clients.iter().enumerate().map(|(lane, client)| async move {
            for k in (1..paths.len()).filter(|k| k % BROWSER_CONNECTIONS == lane) {
                fetch(client, &server.base, &paths[k], etags.map(|e| e[k].as_str())).await?;
            }
            anyhow::Ok(())
        });
        for result in join_all(lanes).await {
            result?;
        }
        samples.record(started.elapsed());
    }
    Ok(samples)
}
