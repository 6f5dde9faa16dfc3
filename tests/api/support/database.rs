//! Test databases: one migrated template for the test binary, a fresh copy per test.
//!
//! With `DATABASE_URL` set, databases are created on that server. Without it, the
//! binary starts a throwaway PostgreSQL cluster of its own (through the same embedded
//! module `serve` uses), which stops when the test process exits. Databases and
//! clusters left behind by a crashed run are removed at the next start.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use carewire::db::embedded::{ClusterOptions, EmbeddedCluster};
use carewire::db::{quote_ident, run_migrations};
use diesel::pg::PgConnection;
use diesel::prelude::*;

/// Where test databases live.
pub struct Backend {
    /// A connection string for any database on the server (dbname is appended), as
    /// the superuser that owns the schema.
    pub base_url: String,
    template: String,
    /// The role test servers run as: it owns nothing and has the runtime grants
    /// (`carewire::db::roles`), given in the template and so in every copy.
    runtime_role: String,
    /// The socket folder or TCP address of the server, for the fault-injecting proxy.
    pub target: Target,
    _cluster: Option<EmbeddedCluster>,
}

/// How to reach the PostgreSQL server directly.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(String),
    Unix(PathBuf),
}

static BACKEND: OnceLock<Backend> = OnceLock::new();
/// The password of the roles tests create: ignored under trust authentication, and
/// enough under password authentication.
const ROLE_PASSWORD: &str = "carewire-test";
static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn backend() -> &'static Backend {
    BACKEND.get_or_init(|| init().unwrap_or_else(|e| panic!("cannot prepare the test database: {e:#}")))
}

/// `url` with `key=value` overriding what it says (libpq: the last value wins, and
/// URI query parameters override the URI's parts).
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{key}={value}")
    } else {
        format!("{url} {key}='{value}'")
    }
}

fn init() -> anyhow::Result<Backend> {
    // Before the first connection: a test binary exits while its last servers' pool
    // threads may still be closing TLS connections.
    carewire::db::init_libpq();
    let pid = std::process::id();
    let (base_url, cluster) = match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => (url, None),
        None => {
            remove_stale_clusters();
            let dir = PathBuf::from(format!("/tmp/cw-test-{pid}"));
            let options = ClusterOptions {
                durable: false,
                max_connections: 300,
                bin_dir: None,
            };
            let cluster = EmbeddedCluster::start(&dir, options)?;
            (cluster.database_url("postgres"), Some(cluster))
        }
    };
    let target = match &cluster {
        Some(cluster) => Target::Unix(cluster.pgdata().to_path_buf()),
        None => tcp_target(&base_url),
    };
    let mut admin = PgConnection::establish(&with_param(&base_url, "dbname", "postgres"))?;
    remove_stale_databases(&mut admin)?;
    let template = format!("cw_tpl_{pid}");
    diesel::sql_query(format!("DROP DATABASE IF EXISTS {}", quote_ident(&template))).execute(&mut admin)?;
    diesel::sql_query(format!("CREATE DATABASE {}", quote_ident(&template))).execute(&mut admin)?;
    let runtime_role = format!("cw_app_{pid}_0");
    diesel::sql_query(format!("DROP ROLE IF EXISTS {}", quote_ident(&runtime_role))).execute(&mut admin)?;
    diesel::sql_query(format!(
        "CREATE ROLE {} LOGIN PASSWORD '{ROLE_PASSWORD}'",
        quote_ident(&runtime_role)
    ))
    .execute(&mut admin)?;
    {
        let mut conn = PgConnection::establish(&with_param(&base_url, "dbname", &template))?;
        run_migrations(&mut conn)?;
        carewire::db::roles::grant_runtime(&mut conn, &runtime_role)?;
    }
    Ok(Backend {
        base_url,
        template,
        runtime_role,
        target,
        _cluster: cluster,
    })
}

/// host and port of a DATABASE_URL, for the proxy (Unix sockets included).
fn tcp_target(url: &str) -> Target {
    let (mut host, mut port) = ("127.0.0.1".to_owned(), "5432".to_owned());
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let hostport = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
        match hostport.rsplit_once(':') {
            Some((h, p)) => {
                host = h.to_owned();
                port = p.to_owned();
            }
            None if !hostport.is_empty() => host = hostport.to_owned(),
            None => {}
        }
        if let Some(query) = rest.split_once('?').map(|(_, q)| q) {
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("host", h)) => host = h.to_owned(),
                    Some(("port", p)) => port = p.to_owned(),
                    _ => {}
                }
            }
        }
    } else {
        for pair in url.split_whitespace() {
            match pair.split_once('=') {
                Some(("host", h)) => host = h.trim_matches('\'').to_owned(),
                Some(("port", p)) => port = p.trim_matches('\'').to_owned(),
                _ => {}
            }
        }
    }
    if host.starts_with('/') {
        Target::Unix(PathBuf::from(host))
    } else {
        Target::Tcp(format!("{host}:{port}"))
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.strip_prefix("cw-test-").and_then(|p| p.parse::<u32>().ok())
            && !pid_alive(pid)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

diesel::table! {
    pg_database (datname) {
        datname -> Text,
    }
}

fn remove_stale_databases(admin: &mut PgConnection) -> anyhow::Result<()> {
    let names: Vec<String> = pg_database::table
        .select(pg_database::datname)
        .filter(pg_database::datname.like("cw\\_t%"))
        .load(admin)?;
    for name in names {
        let pid = name
            .strip_prefix("cw_tpl_")
            .or_else(|| name.strip_prefix("cw_test_").and_then(|r| r.split('_').next()))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !pid_alive(pid)
        {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&name)
            ))
            .execute(admin);
        }
    }
    // Roles of crashed runs (see TestRole): their databases are gone now, so they
    // hold no privileges and can go.
    #[derive(QueryableByName)]
    struct RoleName {
        #[diesel(sql_type = diesel::sql_types::Text)]
        rolname: String,
    }
    let roles: Vec<RoleName> =
        diesel::sql_query("SELECT rolname::text FROM pg_roles WHERE rolname ~ '^cw_[a-z]+_[0-9]+_[0-9]+$'")
            .load(admin)?;
    for role in roles {
        let pid = role
            .rolname
            .rsplit('_')
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !pid_alive(pid)
        {
            let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS {}", quote_ident(&role.rolname)))
                .execute(admin);
        }
    }
    Ok(())
}

/// A database of one's own, dropped on drop.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    /// Dropped with this handle (false for a second handle on the same database).
    owned: bool,
}

impl TestDatabase {
    /// A copy of the migrated template.
    pub fn create() -> TestDatabase {
        TestDatabase::create_from(Some(&backend().template))
    }

    /// An empty database, not migrated.
    pub fn create_empty() -> TestDatabase {
        TestDatabase::create_from(None)
    }

    fn create_from(template: Option<&str>) -> TestDatabase {
        let backend = backend();
        let name = format!(
            "cw_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::establish(&with_param(&backend.base_url, "dbname", "postgres"))
            .expect("connect to the test server");
        let template = template
            .map(|t| format!(" TEMPLATE {}", quote_ident(t)))
            .unwrap_or_default();
        diesel::sql_query(format!("CREATE DATABASE {}{template}", quote_ident(&name)))
            .execute(&mut admin)
            .expect("create a test database");
        let url = with_param(&backend.base_url, "dbname", &name);
        TestDatabase {
            name,
            url,
            owned: true,
        }
    }

    /// Another handle on the same database (for a second server instance); the
    /// database goes when the first handle does.
    pub fn shared(&self) -> TestDatabase {
        TestDatabase {
            name: self.name.clone(),
            url: self.url.clone(),
            owned: false,
        }
    }

    /// The database as the runtime role, the one test servers run as.
    pub fn runtime_url(&self) -> String {
        with_param(
            &with_param(&self.url, "user", &backend().runtime_role),
            "password",
            ROLE_PASSWORD,
        )
    }

    /// A direct connection as the superuser, for arranging data and inspecting what
    /// was stored.
    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url).expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let backend = backend();
        if let Ok(mut admin) = PgConnection::establish(&with_param(&backend.base_url, "dbname", "postgres")) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.name)
            ))
            .execute(&mut admin);
        }
    }
}

/// A login role made for one test, dropped with this handle (with every privilege it
/// was granted in `database`).
pub struct TestRole {
    pub name: String,
    database: String,
}

impl TestRole {
    /// A new role with `LOGIN`, granted what `grants` says in `database` (the SQL runs
    /// there as the superuser, with `{role}` standing for the role's name).
    pub fn create(database: &TestDatabase, purpose: &str, grants: &str) -> TestRole {
        let name = format!(
            "cw_{purpose}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = database.connect();
        diesel::sql_query(format!(
            "CREATE ROLE {} LOGIN PASSWORD '{ROLE_PASSWORD}'",
            quote_ident(&name)
        ))
        .execute(&mut conn)
        .expect("create a test role");
        for statement in grants.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            diesel::sql_query(statement.replace("{role}", &quote_ident(&name)))
                .execute(&mut conn)
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        TestRole {
            name,
            database: database.url.clone(),
        }
    }

    /// `url` signing in as this role.
    pub fn url(&self, url: &str) -> String {
        with_param(&with_param(url, "user", &self.name), "password", ROLE_PASSWORD)
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.database) {
            let role = quote_ident(&self.name);
            let _ = diesel::sql_query(format!("DROP OWNED BY {role}")).execute(&mut conn);
            let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS {role}")).execute(&mut conn);
        }
    }
}
