//! Cold start: spawn `carewire serve`, poll `/readyz` every 5 ms until it answers 200.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::report::Samples;

const SECRET: &str = "bench-signing-secret-that-is-32-bytes-or-more";
const KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

pub fn run(runs: usize) -> anyhow::Result<()> {
    let binary = build_release_binary()?;
    let data = tempfile::Builder::new().prefix("cw-bench").tempdir_in("/tmp")?;

    let mut baseline = Samples::new("baseline: `carewire --version` (spawn to exit)");
    for _ in 0..runs {
        let started = Instant::now();
        let status = Command::new(&binary)
            .arg("--version")
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "carewire --version failed");
        baseline.record(started.elapsed());
    }

    let mut first = Samples::new("serve, embedded cluster, first start (initdb)");
    first.record(start_and_stop(&binary, data.path(), None)?);
    let mut reused = Samples::new("serve, embedded cluster reused (pg_ctl start)");
    for _ in 0..runs {
        reused.record(start_and_stop(&binary, data.path(), None)?);
    }

    let mut external = None;
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let mut samples = Samples::new("serve with DATABASE_URL (already migrated)");
        start_and_stop(&binary, data.path(), Some(&url))?; // migrate once
        for _ in 0..runs {
            samples.record(start_and_stop(&binary, data.path(), Some(&url))?);
        }
        external = Some(samples);
    }

    println!("cold start of a release `carewire serve` to its first /readyz 200 ({runs} runs per case)");
    println!("{}", baseline.line());
    if let Some(external) = &external {
        println!("{}", external.line());
    } else {
        println!("(set DATABASE_URL to also measure serve against an existing server)");
    }
    println!("{}", reused.line());
    println!("{}", first.line());
    Ok(())
}

fn build_release_binary() -> anyhow::Result<PathBuf> {
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--bin", "carewire"])
        .status()?;
    anyhow::ensure!(status.success(), "building the release binary failed");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    Ok(PathBuf::from(target).join("release").join("carewire"))
}

fn start_and_stop(binary: &Path, data: &Path, url: Option<&str>) -> anyhow::Result<Duration> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .env("CAREWIRE_LISTEN", format!("127.0.0.1:{port}"))
        .env("CAREWIRE_DATA_DIR", data)
        .env("CAREWIRE_JWT_SECRET", SECRET)
        .env("CAREWIRE_KEK", KEK)
        .env("CAREWIRE_LOG", "warn")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = url {
        cmd.env("DATABASE_URL", url);
    }
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let ready = wait_ready(port, &mut child, started);
    stop(&mut child)?;
    ready
}

fn wait_ready(port: u16, child: &mut Child, started: Instant) -> anyhow::Result<Duration> {
    while started.elapsed() < Duration::from_secs(120) {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("carewire exited with {status} before it was ready");
        }
        if readyz(port) == Some(200) {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    anyhow::bail!("carewire was not ready within 120 s")
}

fn readyz(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

fn stop(child: &mut Child) -> anyhow::Result<()> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "carewire exited with {status} after SIGTERM");
    Ok(())
}
