//! A release `carewire serve` on a scratch database, with an admin signed in.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::db::ScratchDb;

pub const KEK_B64: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
pub const PASSWORD: &str = "a long benchmark passphrase 2026";

/// Builds the server binary (into `target_dir`, with the plaintext-fields feature, when
/// given) and returns its path.
pub fn build(target_dir: Option<&str>) -> anyhow::Result<PathBuf> {
    // The rustup proxy, not $CARGO: a dependency's rust-toolchain file must not pick
    // the compiler.
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--release", "--quiet", "--bin", "carewire"]);
    if let Some(dir) = target_dir {
        cmd.args(["--features", "insecure-plaintext-fields", "--target-dir", dir]);
    }
    anyhow::ensure!(cmd.status()?.success(), "building carewire failed");
    let dir = target_dir
        .map(str::to_owned)
        .or_else(|| std::env::var("CARGO_TARGET_DIR").ok())
        .unwrap_or_else(|| "target".into());
    Ok(PathBuf::from(dir).join("release").join("carewire"))
}

fn carewire(binary: &Path, db: &ScratchDb, data: &Path) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env("DATABASE_URL", &db.url)
        .env("CAREWIRE_KEK", KEK_B64)
        .env(
            "CAREWIRE_JWT_SECRET",
            "bench-signing-secret-that-is-32-bytes-or-more",
        )
        .env("CAREWIRE_AUDIT_SIGNING_KEY", KEK_B64)
        .env("CAREWIRE_DATA_DIR", data)
        .env("CAREWIRE_LOG", "warn")
        .env(
            "CAREWIRE_DB_POOL_SIZE",
            std::env::var("BENCH_POOL").unwrap_or("32".into()),
        )
        .env("CAREWIRE_LOGIN_MAX_PER_IP", "100000");
    cmd
}

/// A running server; stopped on drop.
pub struct Server {
    child: Child,
    pub base: String,
    pub client: reqwest::Client,
    pub admin_token: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Server {
    pub async fn start(binary: &Path, db: &ScratchDb) -> anyhow::Result<Server> {
        Server::start_with(binary, db, &[]).await
    }

    /// Starts a server with extra settings; on a database that already has the bench
    /// admin (a second instance), the admin is reused.
    pub async fn start_with(binary: &Path, db: &ScratchDb, env: &[(&str, &str)]) -> anyhow::Result<Server> {
        let data = tempfile::tempdir()?;
        let mut admin = carewire(binary, db, data.path())
            .args([
                "user",
                "create",
                "--email",
                "bench-admin@example.test",
                "--role",
                "admin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        writeln!(
            admin.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?,
            "{PASSWORD}"
        )?;
        // Fails on a second instance (the admin exists); the login below says if not.
        let _ = admin.wait()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = carewire(binary, db, data.path())
            .arg("serve")
            .envs(env.iter().copied())
            .env("CAREWIRE_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            anyhow::ensure!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let admin_token = login(&client, &base, "bench-admin@example.test").await?;
        Ok(Server {
            child,
            base,
            client,
            admin_token,
            _data: data,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Signs `email` in with the bench password: its access token.
    pub async fn login(&self, email: &str) -> anyhow::Result<String> {
        login(&self.client, &self.base, email).await
    }

    /// A patient account, made by the admin and signed in: its access token.
    pub async fn patient_account(&self, email: &str) -> anyhow::Result<String> {
        self.post(
            "/v1/admin/users",
            &json!({ "email": email, "password": PASSWORD, "role": "patient" }),
        )
        .await?;
        self.login(email).await
    }

    /// POSTs JSON as the admin; the answer's JSON, or an error naming the status.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, body).await
    }

    /// Sends JSON as the admin; the answer's JSON, or an error naming the status.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> anyhow::Result<Value> {
        let res = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token)
            .json(body)
            .send()
            .await?;
        let status = res.status();
        let value: Value = res.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {value}");
        Ok(value)
    }
}

/// Signs `email` in on `base` with the bench password: its access token.
async fn login(client: &reqwest::Client, base: &str, email: &str) -> anyhow::Result<String> {
    let login: Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await?
        .json()
        .await?;
    Ok(login["access_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("login as {email} failed: {login}"))?
        .to_owned())
}

/// The `id` of a created resource.
pub fn id_of(value: &Value) -> anyhow::Result<String> {
    Ok(value["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no id in {value}"))?
        .to_owned())
}

/// The body of `PUT /v1/providers/{id}/availability/weekly` for a provider open
/// 00:00–23:59 every day.
pub fn all_day_hours() -> Value {
    json!({ "windows": carewire::scheduling::availability::every_day("00:00", "23:59") })
}
