//! The PostgreSQL layer: the r2d2 pool, the one helper that runs diesel work off the
//! async runtime, the embedded migrations, and the roles they run as ([`roles`]).
//!
//! Diesel is synchronous. Every request does all its database work in one closure on
//! tokio's blocking pool through [`Db::run`], which carries the caller's tracing span
//! into the blocking thread and turns an unavailable database into a quick 503: while
//! the circuit [`breaker`] is open, at once.
//! No code ever touches a connection on a tokio worker thread.

pub mod breaker;
pub mod embedded;
mod pool;
pub mod roles;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{CustomizeConnection, HandleError, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::{DatabaseSettings, DatabaseUrl};
use crate::error::Error;

/// Every migration in `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory lock key held while migrating, so that several instances starting at once
/// apply each migration exactly once. ("cw-migr" in ASCII.)
pub(crate) const MIGRATION_LOCK: i64 = 0x63_77_2d_6d_69_67_72;

pub use pool::PgConn;

pub type PgPool = Pool<pool::Manager>;
pub type PooledPg = PooledConnection<pool::Manager>;

/// A handle on the pool. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    acquire_timeout: Duration,
    breaker: Arc<breaker::Breaker>,
}

/// `url` with a libpq `connect_timeout` (seconds) unless it has one: a server that
/// accepts the TCP connection but never answers (an overloaded host, a dead proxy)
/// would otherwise hold a dedicated connection's thread forever. Works for both
/// connection-string forms: `postgres://…` URLs and `key=value` strings.
pub fn with_connect_timeout(url: &str, seconds: u32) -> String {
    if url.contains("connect_timeout") {
        return url.to_owned();
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}connect_timeout={seconds}")
    } else {
        format!("{url} connect_timeout={seconds}")
    }
}

/// Initializes OpenSSL (inside libpq) without its exit handler; call before the first
/// connection. By default OpenSSL frees its global state from an `atexit` handler, and
/// a process that exits while another thread is still inside libpq (a pool thread
/// connecting or closing a TLS connection, a test binary's last server winding down)
/// then crashes in that thread ("double free or corruption", SIGSEGV) instead of
/// exiting with its status. Only the first initialization decides, so every entry
/// point calls this first; `Db::connect` calls it too. The process's memory goes
/// with the process anyway.
pub fn init_libpq() {
    openssl_sys::init();
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("state", &self.pool.state()).finish()
    }
}

impl Db {
    /// Builds the pool without waiting for the database: the server starts and
    /// answers 503 until PostgreSQL is reachable, then recovers by itself.
    pub fn connect(url: &DatabaseUrl, settings: &DatabaseSettings) -> Db {
        init_libpq();
        let breaker = breaker::Breaker::new(url.expose());
        // A host that accepts TCP but never answers must not hold a pool thread.
        let manager = pool::Manager::new(with_connect_timeout(url.expose(), 5), breaker.clone());
        let pool = Pool::builder()
            .max_size(settings.pool_size)
            // Keep a couple of warm connections, not the whole pool: many instances
            // (and tests) share one PostgreSQL and its max_connections.
            .min_idle(Some(settings.pool_size.min(2)))
            // r2d2 retries a failed connect after a delay that doubles up to half of
            // this (requests pass their own acquire timeout): a short cap brings the
            // pool back within a quarter second of the database.
            .connection_timeout(POOL_RETRY_CAP * 2)
            // A connection killed by a PostgreSQL restart is replaced instead of
            // failing a request; the manager skips the ping for recently used ones.
            .test_on_check_out(true)
            .connection_customizer(Box::new(SessionSetup {
                statement_timeout: settings.statement_timeout,
            }))
            .error_handler(Box::new(LogPoolError))
            .build_unchecked(manager);
        Db {
            pool,
            acquire_timeout: settings.acquire_timeout,
            breaker,
        }
    }

    /// Runs `work` with a pooled connection on the blocking pool, inside the current
    /// tracing span. This is the only way request code reaches the database.
    pub async fn run<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let span = tracing::Span::current();
        let pool = self.pool.clone();
        let timeout = self.acquire_timeout;
        let breaker = self.breaker.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut conn = acquire(&pool, &breaker, timeout)?;
            let result = work(&mut conn);
            if result.is_err() {
                conn.distrust();
            }
            result
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(join) if join.is_panic() => Err(Error::internal("panic in database work")),
            Err(_) => Err(Error::Unavailable("database work was cancelled")),
        }
    }

    /// A connection for start-up code and the CLI, which may block.
    pub fn get_blocking(&self) -> Result<PooledPg, Error> {
        Ok(self.pool.get_timeout(self.acquire_timeout)?)
    }

    /// Connections open and idle, for metrics.
    pub fn state(&self) -> r2d2::State {
        self.pool.state()
    }
}

/// The longest wait between the pool's attempts to open a connection.
const POOL_RETRY_CAP: Duration = Duration::from_millis(250);

/// A request waits for a connection in slices this long, so that one already waiting
/// when the breaker opens gives up then, not at the end of its acquire timeout.
const ACQUIRE_SLICE: Duration = Duration::from_millis(50);

/// A connection within `timeout`; while the breaker is open only one already open
/// (waiting for a new one would only wait out the timeout).
fn acquire(pool: &PgPool, breaker: &breaker::Breaker, timeout: Duration) -> Result<PooledPg, Error> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if breaker.is_open() {
            return pool
                .try_get()
                .ok_or(Error::Unavailable("the database is unavailable"));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match pool.get_timeout(left.min(ACQUIRE_SLICE)) {
            Ok(conn) => return Ok(conn),
            Err(e) if left <= ACQUIRE_SLICE => return Err(e.into()),
            Err(_) => {}
        }
    }
}

/// Per-connection session settings, applied when the pool opens a connection.
#[derive(Debug)]
struct SessionSetup {
    statement_timeout: Duration,
}

impl CustomizeConnection<PgConn, diesel::r2d2::Error> for SessionSetup {
    fn on_acquire(&self, conn: &mut PgConn) -> Result<(), diesel::r2d2::Error> {
        let sql = format!(
            "SET statement_timeout = {}; SET TIME ZONE 'UTC'; SET application_name = 'carewire'",
            self.statement_timeout.as_millis()
        );
        conn.batch_execute(&sql).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// r2d2 reports connection failures here instead of through the `log` crate.
#[derive(Debug)]
struct LogPoolError;

impl HandleError<diesel::r2d2::Error> for LogPoolError {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        tracing::warn!(error = %error, "database connection failed");
    }
}

/// Applies every pending migration, one instance at a time. Returns the versions
/// applied. Needs the owner role: diesel creates its history table first.
pub fn run_migrations(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(conn)?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>())
        .map_err(|e| anyhow::anyhow!("applying migrations failed: {e}"));
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(conn)?;
    applied
}

/// What `migrate` did.
#[derive(Debug, Default)]
pub struct Migrated {
    /// The versions applied.
    pub applied: Vec<String>,
    /// The runtime role granted its rights, when it is not the owner itself.
    pub granted: Option<String>,
}

/// Migrates as the owner (`owner`), then grants the runtime role (`runtime`, the
/// role `serve` connects as) its rights. With one role for both (a single-role
/// development setup), there is nothing to grant.
pub fn migrate(owner: &mut PgConnection, runtime: &mut PgConnection) -> anyhow::Result<Migrated> {
    let applied = run_migrations(owner)?;
    let owner_role = roles::current_role(owner)?;
    let runtime_role = roles::current_role(runtime)?;
    let granted = if runtime_role == owner_role {
        None
    } else {
        roles::grant_runtime(owner, &runtime_role).map_err(|e| {
            anyhow::anyhow!("granting the runtime role {runtime_role} its rights failed: {e}")
        })?;
        Some(runtime_role)
    };
    Ok(Migrated { applied, granted })
}

/// Brings the schema up to date before the runtime connection `runtime` uses it: as
/// the owner at `owner_url` when one is configured (and then grants the runtime role
/// its rights), otherwise as the runtime role itself, which then must be able to.
pub fn prepare(owner_url: Option<&str>, runtime: &mut PgConnection) -> anyhow::Result<Migrated> {
    use anyhow::Context as _;
    if let Some(url) = owner_url {
        let mut owner = PgConnection::establish(&with_connect_timeout(url, 5))
            .context("cannot connect as the migration role (CAREWIRE_MIGRATION_DATABASE_URL)")?;
        return migrate(&mut owner, runtime);
    }
    if pending_migrations(runtime)?.is_empty() {
        return Ok(Migrated::default());
    }
    let applied = run_migrations(runtime).context(
        "the database role cannot apply the pending migrations: run `carewire migrate` with \
         CAREWIRE_MIGRATION_DATABASE_URL set to the owner role",
    )?;
    Ok(Migrated {
        applied,
        granted: None,
    })
}

/// The versions this binary knows that the database lacks. Reads the history table
/// directly, so it needs only SELECT on it (diesel's own check creates the table).
pub fn pending_migrations(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    use diesel::migration::MigrationSource;
    use diesel::sql_types::{Bool, Text};
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = Bool)]
        exists: bool,
    }
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let known = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map_err(|e| Error::Internal(anyhow::anyhow!("reading the embedded migrations failed: {e}")))?;
    let exists = diesel::sql_query("SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS exists")
        .get_result::<Exists>(conn)?
        .exists;
    let applied: std::collections::HashSet<String> = if exists {
        diesel::sql_query("SELECT version::text FROM __diesel_schema_migrations")
            .load::<Version>(conn)?
            .into_iter()
            .map(|v| v.version)
            .collect()
    } else {
        Default::default()
    };
    Ok(known
        .iter()
        .map(|m| m.name().version().to_string())
        .filter(|v| !applied.contains(v))
        .collect())
}

/// Whether the database lacks a migration this binary knows.
pub fn has_pending_migrations(conn: &mut PgConnection) -> Result<bool, Error> {
    Ok(!pending_migrations(conn)?.is_empty())
}

/// Quotes an SQL identifier (for database names in admin statements).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::with_connect_timeout;

    #[test]
    fn a_connect_timeout_is_added_to_either_connection_string_form_once() {
        assert_eq!(
            with_connect_timeout("postgres://u@h:5432/db", 5),
            "postgres://u@h:5432/db?connect_timeout=5"
        );
        assert_eq!(
            with_connect_timeout("postgres://u@h/db?sslmode=disable", 5),
            "postgres://u@h/db?sslmode=disable&connect_timeout=5"
        );
        assert_eq!(
            with_connect_timeout("host='/tmp/pg dir' port=5432 dbname=x", 5),
            "host='/tmp/pg dir' port=5432 dbname=x connect_timeout=5"
        );
        assert_eq!(
            with_connect_timeout("postgres://h/db?connect_timeout=2", 5),
            "postgres://h/db?connect_timeout=2"
        );
    }
}
