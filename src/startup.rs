//! Building and running the server. `main` and the tests start it the same way: build
//! an [`Application`] (which binds its listener, so port 0 works), read its address,
//! then run it until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use carewire_audit::CheckpointSigner;

use crate::audit::sealer::{Sealer, SealerConfig};
use crate::auth::throttle::LoginThrottle;
use crate::auth::{AuthService, SessionCache, password, tokens::TokenKeys};
use crate::config::Settings;
use crate::consult::ConsultState;
use crate::crypto::{Crypto, CryptoOptions, Kek, kek::KekSource};
use crate::db::{self, Db};
use crate::http::edge::EdgeConfig;
use crate::realtime::RealtimeState;
use crate::realtime::bus::{Bus, PgBus};
use crate::state::{AppState, Shared};

/// Extra knobs for building, used by tests.
#[derive(Default)]
pub struct BuildOptions {
    /// Routes mounted behind the same edge as the real ones.
    pub extra_routes: Option<BoxedFilter<(Response,)>>,
    /// The clock timed work reads; `None`: the system clock.
    pub clock: Option<Arc<dyn crate::clock::Clock>>,
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("extra_routes", &self.extra_routes.is_some())
            .field("clock", &self.clock)
            .finish()
    }
}

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    /// This instance's WebSocket connections and the event stream they follow.
    hub: Arc<crate::realtime::hub::Hub>,
    /// This instance's consultation rooms.
    consult: ConsultState,
    routes: BoxedFilter<(Response,)>,
    edge: Arc<EdgeConfig>,
    sealer: SealerConfig,
    signer: Arc<CheckpointSigner>,
    /// Consultation frames on their way to other instances, written once serving.
    relay_queue: Option<tokio::sync::mpsc::Receiver<(uuid::Uuid, crate::consult::relay::Envelope)>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects to the database (waiting up to 30 s for it), applies migrations,
    /// loads keys, seeds the demo clinic when asked, and binds the listener.
    /// `settings.database.url` must be set: `serve` resolves the embedded cluster
    /// before calling this.
    pub async fn build(mut settings: Settings, options: BuildOptions) -> anyhow::Result<Application> {
        // Again here, not only when settings are read: `serve --demo` turns it on later.
        settings.check_demo()?;
        // The owner's credentials are used once, to migrate, and not kept with the
        // settings every part of the server can read.
        let owner_url = settings
            .database
            .migration_url
            .take()
            .map(|u| u.expose().to_owned());
        if owner_url.is_some() && settings.environment == crate::config::Environment::Production {
            tracing::warn!(
                "CAREWIRE_MIGRATION_DATABASE_URL is set for serve: the server process holds the owner role's \
                 credentials; in production run `carewire migrate` as a deployment step and leave it out of \
                 serve's environment"
            );
        }
        let settings = Arc::new(settings);
        let url = settings
            .database
            .url
            .as_ref()
            .context("no database URL: start the embedded cluster or set DATABASE_URL first")?;
        crate::http::metrics::handle();
        if cfg!(feature = "insecure-plaintext-fields") {
            anyhow::ensure!(
                settings.environment != crate::config::Environment::Production,
                "this build stores patient data in plaintext (feature insecure-plaintext-fields) and must not run in production"
            );
            tracing::error!(
                "THIS BUILD STORES PATIENT DATA IN PLAINTEXT: it exists only to benchmark encryption"
            );
        }
        let db = Db::connect(url, &settings.database);

        let (kek, kek_source) = Kek::from_settings(&settings)?;
        if kek_source == KekSource::GeneratedForDevelopment {
            tracing::warn!(kek.id = %kek.id(), "using a development KEK from the data folder");
        }
        let crypto = {
            let db = db.clone();
            let startup_wait = settings.database.startup_wait;
            let url = url.expose().to_owned();
            let environment = settings.environment;
            let options = CryptoOptions {
                max_encryptions_per_key: settings.crypto.max_encryptions_per_key,
            };
            tokio::task::spawn_blocking(move || -> anyhow::Result<Crypto> {
                let mut conn = wait_for_database(&db, startup_wait)?;
                let migrated = db::prepare(owner_url.as_deref(), &mut conn)?;
                if !migrated.applied.is_empty() {
                    tracing::info!(count = migrated.applied.len(), versions = ?migrated.applied, "applied database migrations");
                }
                check_role(&mut conn, environment)?;
                Ok(Crypto::open(&url, kek, options)?)
            })
            .await??
        };
        if settings.demo {
            crate::demo::seed_at_startup(&db, &crypto).await?;
        }

        let auth = AuthService {
            keys: TokenKeys::from_settings(&settings)?,
            throttle: LoginThrottle::new(
                settings.auth.login_max_per_account,
                settings.auth.login_max_per_ip,
                settings.auth.login_window,
            ),
            sessions: SessionCache::new(settings.auth.session_check_ttl),
            dummy_hash: dummy_password_hash().await?,
        };
        let signer = Arc::new(crate::crypto::audit_key::checkpoint_signer(&settings)?);
        let sealer = SealerConfig {
            database_url: url.expose().to_owned(),
            checkpoint_file: settings.audit.checkpoint_file.clone(),
            seal_interval: settings.audit.seal_interval,
            checkpoint_interval: settings.audit.checkpoint_interval,
        };
        let edge = Arc::new(EdgeConfig::from_settings(
            &settings.http,
            crate::api::openapi::route_table(),
        ));
        let hub = Arc::new(crate::realtime::hub::Hub::new(settings.realtime.queue));
        // Each running server is one instance, with an id of its own.
        let (relay, relay_queue) = crate::consult::relay::Relay::new(uuid::Uuid::new_v4());
        let state = AppState::new(Shared {
            settings: settings.clone(),
            db,
            crypto,
            auth,
            clock: options
                .clock
                .unwrap_or_else(|| Arc::new(crate::clock::SystemClock)),
        });
        let realtime = RealtimeState {
            app: state.clone(),
            hub: hub.clone(),
        };
        let consult = ConsultState {
            app: state.clone(),
            rooms: Arc::new(crate::consult::Consultations::new(
                settings.consult.room.clone(),
                relay,
            )),
            hub: hub.clone(),
        };
        let routes = crate::api::routes(&state, &realtime, &consult, options.extra_routes);
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let local_addr = listener.local_addr()?;
        Ok(Application {
            listener,
            local_addr,
            state,
            hub,
            consult,
            routes,
            edge,
            sealer,
            signer,
            relay_queue: Some(relay_queue),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// This instance's WebSocket connections.
    pub fn hub(&self) -> &Arc<crate::realtime::hub::Hub> {
        &self.hub
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish (up to
    /// `CAREWIRE_SHUTDOWN_GRACE_SECS`) and stops background work.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(address = %self.local_addr, "listening");
        let mut background = spawn_background(&self.state);
        // The event stream: listen for it, and feed this instance's sockets from now on.
        let mut bus = PgBus::start(self.sealer.database_url.clone(), self.consult.rooms.instance());
        match self
            .state
            .db
            .run(|conn| Ok(crate::realtime::stream::head(conn)?))
            .await
        {
            Ok(head) => self.hub.start_after(head.last_seq),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event stream's head; starting from the beginning")
            }
        }
        background.push(tokio::spawn(crate::realtime::hub::pump(
            self.hub.clone(),
            self.state.db.clone(),
            bus.wakeups(),
        )));
        // Consultation frames other instances relay to this one, and ours to them.
        background.push(tokio::spawn(crate::consult::relay::receive(
            self.consult.clone(),
            bus.relay_wakeups(),
        )));
        if let Some(queue) = self.relay_queue {
            background.push(tokio::spawn(crate::consult::relay::write_queued(
                self.state.db.clone(),
                queue,
            )));
        }
        let sealer = match Sealer::spawn(self.sealer, self.signer) {
            Ok(sealer) => Some(sealer),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the audit sealer");
                None
            }
        };
        let grace = self.state.settings.http.shutdown_grace;
        crate::http::server::serve(self.listener, self.routes, self.edge, shutdown, grace).await;
        // Upgraded sockets are not HTTP requests in flight: tell them to go.
        self.hub.close_all(crate::realtime::hub::SHUTTING_DOWN);
        self.consult.rooms.close_all();
        for task in background {
            task.abort();
        }
        let _ = tokio::task::spawn_blocking(move || bus.stop()).await;
        // Seal what the last requests committed, and sign a final checkpoint.
        if let Some(sealer) = sealer {
            let _ = tokio::task::spawn_blocking(move || sealer.stop()).await;
        }
    }
}

fn spawn_background(state: &AppState) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![
        tokio::spawn(dispatch_reminders(state.clone())),
        tokio::spawn(send_webhooks(state.clone())),
        tokio::spawn(prune_realtime(state.clone())),
    ];
    tasks.extend(spawn_maintenance(state));
    tasks
}

/// Sends due reminders, every `CAREWIRE_REMINDER_POLL_MS`, and at once again while a
/// round finds a full batch.
async fn dispatch_reminders(state: AppState) {
    let channels: Arc<Vec<Box<dyn crate::notifications::channels::Channel>>> = Arc::new({
        let mut channels: Vec<Box<dyn crate::notifications::channels::Channel>> =
            vec![Box::new(crate::notifications::channels::WebSocket)];
        if state.settings.webhook.is_some() {
            channels.push(Box::new(crate::notifications::channels::Webhook));
        }
        channels
    });
    let late_after = chrono::Duration::from_std(state.settings.reminders.late_after)
        .unwrap_or(chrono::Duration::minutes(1));
    loop {
        let now = state.clock.now();
        let channels = channels.clone();
        let round = state
            .db
            .run(move |conn| crate::reminders::dispatcher::run_once(conn, now, late_after, &channels))
            .await;
        match round {
            Ok(round) if round.claimed() as i64 == crate::reminders::dispatcher::BATCH => continue,
            Ok(round) if round.claimed() > 0 => {
                tracing::info!(
                    sent = round.sent,
                    late = round.late,
                    skipped = round.skipped,
                    "reminders dispatched"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "dispatching reminders failed"),
        }
        tokio::time::sleep(state.settings.reminders.poll).await;
    }
}

/// Sends webhook deliveries as they fall due.
async fn send_webhooks(state: AppState) {
    let Some(settings) = state.settings.webhook.as_ref() else {
        return;
    };
    let client = crate::notifications::webhook::client(settings);
    loop {
        match crate::notifications::webhook::run_once(&state, &client).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sending webhooks failed"),
        }
        tokio::time::sleep(state.settings.reminders.poll).await;
    }
}

/// Forgets events past their retention and spent tickets, hourly.
async fn prune_realtime(state: AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        let retention = chrono::Duration::from_std(state.settings.realtime.retention)
            .unwrap_or(chrono::Duration::days(7));
        let cutoff = chrono::Utc::now() - retention;
        let pruned = state
            .db
            .run(move |conn| {
                let events = crate::realtime::stream::prune(conn, cutoff)?;
                crate::auth::tickets::prune(conn)?;
                Ok(events)
            })
            .await;
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "pruned events past their retention"),
            Err(e) => tracing::warn!(error = %e, "pruning events failed"),
        }
    }
}

fn spawn_maintenance(state: &AppState) -> Vec<JoinHandle<()>> {
    let throttle_state = state.clone();
    let keyring_state = state.clone();
    let break_glass_state = state.clone();
    let holds_state = state.clone();
    vec![
        // Lapse holds as they expire (their slot.released events go out), and forget
        // idempotency keys older than a day.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            let mut ticks = 0u64;
            loop {
                every.tick().await;
                ticks += 1;
                let prune = ticks % 720 == 1;
                let swept = holds_state
                    .db
                    .run(move |conn| {
                        use diesel::RunQueryDsl;
                        #[derive(diesel::QueryableByName)]
                        struct Expired {
                            #[diesel(sql_type = diesel::sql_types::Integer)]
                            n: i32,
                        }
                        let expired: Expired =
                            diesel::sql_query("SELECT expire_holds() AS n").get_result(conn)?;
                        if prune {
                            crate::scheduling::idempotency::prune(conn)?;
                        }
                        Ok(expired.n)
                    })
                    .await;
                match swept {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(holds = n, "lapsed holds released"),
                    Err(e) => tracing::warn!(error = %e, "releasing lapsed holds failed"),
                }
            }
        }),
        // End expired break-glass grants, and record each end.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(15));
            loop {
                every.tick().await;
                let ended = break_glass_state
                    .db
                    .run(crate::records::break_glass::end_expired)
                    .await;
                match ended {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(grants = n, "break-glass grants expired"),
                    Err(e) => tracing::warn!(error = %e, "ending expired break-glass grants failed"),
                }
            }
        }),
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                throttle_state.auth.throttle.prune();
            }
        }),
        // Pick up key versions created or retired by the CLI or another instance.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(keyring_state.settings.crypto.keyring_refresh);
            every.tick().await;
            loop {
                every.tick().await;
                let crypto = keyring_state.crypto.clone();
                match tokio::task::spawn_blocking(move || crypto.refresh()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "reloading the key ring failed"),
                    Err(_) => tracing::warn!("reloading the key ring was interrupted"),
                }
            }
        }),
    ]
}

/// Refuses to serve, in production, as a role that could rewrite the audit log (a
/// superuser, the tables' owner, or one granted UPDATE/DELETE/TRUNCATE on them);
/// elsewhere says so loudly. See `db::roles`.
fn check_role(
    conn: &mut diesel::PgConnection,
    environment: crate::config::Environment,
) -> anyhow::Result<()> {
    let standing = db::roles::standing(conn).context("cannot check the database role")?;
    if !standing.can_rewrite_audit() {
        return Ok(());
    }
    anyhow::ensure!(
        environment != crate::config::Environment::Production,
        "the database role {} {}: in production the server must run as a role that owns nothing \
         (run `carewire migrate` with CAREWIRE_MIGRATION_DATABASE_URL set to the owner role, and \
         point DATABASE_URL at the runtime role; see the README's database roles)",
        standing.role,
        standing.reason()
    );
    tracing::error!(
        role = %standing.role,
        "THE DATABASE ROLE {}: whoever holds its credentials can rewrite the audit log; \
         run as a runtime role in production (README: database roles)",
        standing.reason().to_uppercase()
    );
    Ok(())
}

/// A pooled connection, retrying while the database starts.
fn wait_for_database(db: &Db, wait: Duration) -> anyhow::Result<db::PooledPg> {
    let started = Instant::now();
    let deadline = started + wait;
    let mut warned = false;
    loop {
        match db.get_blocking() {
            Ok(conn) => {
                if warned {
                    tracing::info!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "the database answered"
                    );
                }
                return Ok(conn);
            }
            Err(e) if Instant::now() < deadline => {
                if !warned {
                    tracing::warn!(
                        error = %e,
                        "waiting for the database: retrying for up to {} s (CAREWIRE_DB_STARTUP_WAIT_SECS)",
                        wait.as_secs()
                    );
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(_) => anyhow::bail!(
                "the database did not answer within {} s (CAREWIRE_DB_STARTUP_WAIT_SECS); check DATABASE_URL and that PostgreSQL is running and accepts connections",
                wait.as_secs()
            ),
        }
    }
}

/// An argon2id hash of a random password, for answering unknown emails.
async fn dummy_password_hash() -> anyhow::Result<String> {
    tokio::task::spawn_blocking(|| {
        let mut bytes = [0u8; 24];
        crate::crypto::random_bytes(&mut bytes)?;
        let random = SecretString::from(hex::encode(bytes));
        password::hash(&random).map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await?
}
