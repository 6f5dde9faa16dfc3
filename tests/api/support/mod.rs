//! Shared test support: a real server on 127.0.0.1:0 against a database of its own.
//!
//! `TestApp::spawn()` builds the server exactly as `carewire serve` does (through
//! `Application::build`), on a fresh copy of a migrated template database, and drops
//! that database afterwards. Logs are off unless `TEST_LOG` is set (to a filter such
//! as `debug`).

pub mod booking;
pub mod database;
pub mod modules;
pub mod peer;
pub mod proxy;
pub mod ws;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Once;

use carewire::config::Settings;
use carewire::context::Role;
use carewire::startup::{Application, BuildOptions};
use carewire::state::AppState;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use warp::filters::BoxedFilter;
use warp::reply::Response;

pub use database::{TestDatabase, TestRole, with_param};

pub const JWT_SECRET: &str = "test-signing-secret-that-is-32-bytes-or-more";
pub const KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const AUDIT_SIGNING_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
pub const PASSWORD: &str = "correct horse battery staple";

static LOGS: Once = Once::new();
static CAPTURED: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

/// A handle on the captured log output.
#[derive(Clone)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of the test binary (debug level, JSON) to memory, so a test
/// can check what the servers wrote: from the first call on, every test's servers log
/// there, which makes the check see more, never less. Call before spawning servers.
pub fn capture_logs() {
    CAPTURED.get_or_init(|| {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Captured(buffer.clone());
        let settings = carewire::config::LogSettings {
            filter: "debug".into(),
            format: carewire::config::LogFormat::Json,
        };
        assert!(
            carewire::telemetry::init_with_writer(&settings, move || writer.clone()),
            "a log subscriber was already installed (unset TEST_LOG for this test binary)"
        );
        buffer
    });
}

/// Everything logged so far.
pub fn captured_logs() -> String {
    let buffer = CAPTURED.get().expect("capture_logs() was called");
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

fn init_logs() {
    LOGS.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let settings = carewire::config::LogSettings {
                filter,
                format: carewire::config::LogFormat::Text,
            };
            carewire::telemetry::init(&settings);
        }
    });
}

/// Tokens from a login.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub tokens: Tokens,
}

pub struct TestAppBuilder {
    settings: BTreeMap<String, String>,
    extra_routes: Option<BoxedFilter<(Response,)>>,
    via_proxy: Option<u16>,
    database: Option<TestDatabase>,
    clock: Option<std::sync::Arc<dyn carewire::clock::Clock>>,
}

impl TestAppBuilder {
    /// Overrides a setting by its environment name.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn extra_routes(mut self, routes: BoxedFilter<(Response,)>) -> Self {
        self.extra_routes = Some(routes);
        self
    }

    /// Reach the database through a local proxy on `port` (see `proxy::DbProxy`).
    pub fn via_proxy(mut self, port: u16) -> Self {
        self.via_proxy = Some(port);
        self
    }

    /// Timed work (reminders, webhook retries) reads this clock.
    pub fn clock(mut self, clock: carewire::clock::ManualClock) -> Self {
        self.clock = Some(std::sync::Arc::new(clock));
        self
    }

    /// Use this database instead of a fresh one (e.g. a second instance).
    pub fn database(mut self, database: TestDatabase) -> Self {
        self.database = Some(database);
        self
    }

    pub async fn spawn(self) -> TestApp {
        init_logs();
        let db = self.database.unwrap_or_else(TestDatabase::create);
        let data_dir = tempfile::tempdir().expect("a data folder");
        let url = match self.via_proxy {
            Some(port) => with_param(
                &with_param(&db.runtime_url(), "host", "127.0.0.1"),
                "port",
                &port.to_string(),
            ),
            None => db.runtime_url(),
        };
        let mut vars: BTreeMap<String, String> = BTreeMap::from([
            ("DATABASE_URL".into(), url),
            ("CAREWIRE_LISTEN".into(), "127.0.0.1:0".into()),
            ("CAREWIRE_DATA_DIR".into(), data_dir.path().display().to_string()),
            ("CAREWIRE_JWT_SECRET".into(), JWT_SECRET.into()),
            ("CAREWIRE_KEK".into(), KEK.into()),
            ("CAREWIRE_AUDIT_SIGNING_KEY".into(), AUDIT_SIGNING_KEY.into()),
            ("CAREWIRE_DB_POOL_SIZE".into(), "4".into()),
            ("CAREWIRE_DB_ACQUIRE_TIMEOUT_MS".into(), "1500".into()),
            ("CAREWIRE_SHUTDOWN_GRACE_SECS".into(), "5".into()),
        ]);
        vars.extend(self.settings);
        let settings = Settings::load(|name| vars.get(name).cloned(), None).expect("valid test settings");
        let app = Application::build(
            settings,
            BuildOptions {
                extra_routes: self.extra_routes,
                clock: self.clock,
            },
        )
        .await
        .expect("the server builds");
        let addr = app.local_addr();
        let state = app.state().clone();
        let hub = app.hub().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            base_url: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
            db,
            state,
            hub,
            shutdown: Some(tx),
            server: Some(server),
            _data_dir: data_dir,
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base_url: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    pub state: AppState,
    /// The server's WebSocket connections.
    pub hub: std::sync::Arc<carewire::realtime::hub::Hub>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _data_dir: tempfile::TempDir,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            settings: BTreeMap::new(),
            extra_routes: None,
            via_proxy: None,
            database: None,
            clock: None,
        }
    }

    pub async fn spawn() -> TestApp {
        TestApp::builder().spawn().await
    }

    /// The server's data folder (development keys, the audit checkpoint file).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    /// The external audit checkpoint file.
    pub fn checkpoint_file(&self) -> std::path::PathBuf {
        self.state.settings.audit.checkpoint_file.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(Method::GET, path).send().await.expect("GET")
    }

    pub async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.request(Method::GET, path)
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn post_as(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.request(Method::POST, path)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// Registers a patient and returns the account JSON.
    pub async fn register(&self, email: &str) -> Value {
        let res = self
            .post_json(
                "/v1/auth/register",
                &json!({ "email": email, "password": PASSWORD }),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "registering {email}");
        res.json().await.expect("account JSON")
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json("/v1/auth/login", &json!({ "email": email, "password": password }))
            .await
    }

    pub async fn tokens(&self, email: &str) -> Tokens {
        let res = self.login(email, PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK, "logging in {email}");
        let body: Value = res.json().await.expect("token JSON");
        Tokens {
            access: body["access_token"].as_str().expect("access_token").to_owned(),
            refresh: body["refresh_token"].as_str().expect("refresh_token").to_owned(),
        }
    }

    /// A new patient, registered and signed in.
    pub async fn patient(&self) -> User {
        let email = unique_email("patient");
        let account = self.register(&email).await;
        let tokens = self.tokens(&email).await;
        User {
            id: account["id"].as_str().expect("id").to_owned(),
            email,
            tokens,
        }
    }

    /// A new account with `role`, created the way the CLI does, and signed in.
    pub async fn user_with_role(&self, role: Role) -> User {
        let email = unique_email(role.as_str());
        let state = self.state.clone();
        let parsed = carewire::accounts::Email::parse(&email).expect("email");
        let id = tokio::task::spawn_blocking(move || {
            let hash = carewire::auth::password::hash(&secrecy::SecretString::from(PASSWORD.to_owned()))
                .expect("hash");
            let mut conn = state.db.get_blocking().expect("connection");
            carewire::accounts::create(&mut conn, &state.crypto, &parsed, role, hash)
                .expect("create account")
                .id
        })
        .await
        .expect("join");
        let tokens = self.tokens(&email).await;
        User {
            id: id.to_string(),
            email,
            tokens,
        }
    }

    pub async fn admin(&self) -> User {
        self.user_with_role(Role::Admin).await
    }

    /// Asserts that `user`'s tokens no longer work: the access token is refused, and
    /// so is a refresh.
    pub async fn assert_signed_out(&self, user: &User) {
        let me = self.get_as("/v1/me", &user.tokens.access).await.status();
        assert_eq!(me, StatusCode::UNAUTHORIZED, "the access token still works");
        let refresh = self
            .post_json(
                "/v1/auth/refresh",
                &json!({ "refresh_token": user.tokens.refresh }),
            )
            .await
            .status();
        assert_eq!(refresh, StatusCode::UNAUTHORIZED, "the refresh token still works");
    }

    /// Stops the server gracefully and waits for it.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// An email no other test uses.
pub fn unique_email(prefix: &str) -> String {
    format!("{prefix}.{}@example.test", uuid::Uuid::new_v4().simple())
}

/// The body of a problem response, after checking its content type.
pub async fn problem(res: reqwest::Response) -> Value {
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "not a problem document");
    res.json().await.expect("problem JSON")
}

/// The problem `type` without its base.
pub fn problem_type(problem: &Value) -> &str {
    problem["type"]
        .as_str()
        .and_then(|t| t.strip_prefix(carewire::error::PROBLEM_BASE))
        .unwrap_or("")
}
