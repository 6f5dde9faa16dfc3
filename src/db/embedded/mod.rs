//! A private PostgreSQL cluster, run from the system's PostgreSQL binaries, for when
//! no `DATABASE_URL` is configured.
//!
//! The cluster lives in a folder of its own (by default `./.carewire/pg`) and listens
//! only on a Unix socket inside that folder (`listen_addresses = ''`), so it never
//! collides with another server on the machine and nothing else can reach it. It is
//! created on the first start (`initdb`), reused on the next, and stopped when its
//! owner is dropped, but only if this process started it. A small watchdog process
//! stops it too if this process dies without cleaning up (even on SIGKILL): it waits
//! for its standard input, a pipe from us, to close.
//!
//! PostgreSQL refuses to run as root. When Carewire runs as root the cluster runs as
//! the unprivileged `postgres` user, which owns the cluster folder; when that user
//! cannot reach the folder asked for, the cluster lives in one it can (see
//! [`placement`]).

mod placement;

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use diesel::Connection;
use diesel::pg::PgConnection;
use diesel::prelude::*;

pub use placement::{Blocked, Relocation};
use placement::{Created, Placement};

/// The user the cluster runs as when Carewire runs as root.
const UNPRIVILEGED_USER: &str = "postgres";
/// Superuser name created by `initdb`; it owns the schema and migrates.
const SUPERUSER: &str = "postgres";
/// The role the server runs as: it owns nothing (see `db::roles`).
pub const RUNTIME_ROLE: &str = "carewire_app";
/// Longest Unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb, pg_ctl and postgres on PATH and in \
         /usr/lib/postgresql/*/bin). Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; \
         Fedora: `dnf install postgresql-server`; macOS: `brew install postgresql@15`), or set \
         DATABASE_URL to use an existing server"
    )]
    NoBinaries,
    #[error(
        "PostgreSQL refuses to run as root and there is no `{UNPRIVILEGED_USER}` user to run it as; \
         create one (`useradd --system --create-home {UNPRIVILEGED_USER}`), run Carewire as a normal \
         user, or set DATABASE_URL"
    )]
    NoUnprivilegedUser,
    #[error(
        "the cluster folder {0} makes a socket path longer than the {MAX_SOCKET_PATH} bytes Unix allows; \
         set CAREWIRE_DATA_DIR to a shorter path"
    )]
    SocketPathTooLong(PathBuf),
    #[error(
        "the embedded cluster's folder {folder} cannot be reached by the `{UNPRIVILEGED_USER}` user it runs \
         as: {blocked}; {advice}"
    )]
    Unreachable {
        folder: PathBuf,
        blocked: Blocked,
        advice: String,
    },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("cannot prepare {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot connect to the embedded cluster: {0}")]
    Connect(String),
}

/// Knobs for the cluster. Tests trade durability for speed; `serve` never does.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `fsync` and friends on. Only a throwaway test cluster turns this off.
    pub durable: bool,
    pub max_connections: u32,
    /// Where initdb, pg_ctl and postgres are; `None` searches PATH and
    /// /usr/lib/postgresql/*/bin.
    pub bin_dir: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            durable: true,
            max_connections: 100,
            bin_dir: None,
        }
    }
}

/// A running embedded cluster. Stops the server on drop if this process started it.
#[derive(Debug)]
pub struct EmbeddedCluster {
    pgdata: PathBuf,
    relocated: Option<Relocation>,
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    started_here: bool,
    /// Stops the cluster when our end of its stdin closes (when we exit).
    watchdog: Option<Child>,
}

#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

impl EmbeddedCluster {
    /// Creates the cluster in `pgdata` if needed and starts it unless it already runs.
    /// A first start that fails removes what it created.
    pub fn start(pgdata: &Path, options: ClusterOptions) -> Result<EmbeddedCluster, EmbeddedError> {
        let requested = std::path::absolute(pgdata).map_err(|source| EmbeddedError::Io {
            path: pgdata.to_path_buf(),
            source,
        })?;
        let run_as = unprivileged_user()?;
        let mut created = Created::default();
        match Self::start_in(&requested, run_as, &options, &mut created) {
            Ok(cluster) => Ok(cluster),
            Err(e) => {
                created.undo();
                Err(e)
            }
        }
    }

    fn start_in(
        requested: &Path,
        run_as: Option<RunAs>,
        options: &ClusterOptions,
        created: &mut Created,
    ) -> Result<EmbeddedCluster, EmbeddedError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EmbeddedError::Io { path, source }
        };
        let Placement { pgdata, relocated } = placement::place(requested, run_as.as_ref(), created)?;
        if pgdata.join(".s.PGSQL.5432").as_os_str().len() > MAX_SOCKET_PATH {
            return Err(EmbeddedError::SocketPathTooLong(pgdata));
        }
        if let Some(Relocation {
            requested,
            blocked_by: Some(blocked),
        }) = &relocated
        {
            tracing::warn!(
                requested = %requested.display(),
                folder = %pgdata.display(),
                "the `{UNPRIVILEGED_USER}` user the embedded cluster runs as cannot reach the folder asked for \
                 ({blocked}), so the cluster lives in a folder it owns, and the folder asked for links to it"
            );
        }
        std::fs::set_permissions(&pgdata, std::fs::Permissions::from_mode(0o700)).map_err(io_err(&pgdata))?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&pgdata, Some(user.uid), Some(user.gid)).map_err(io_err(&pgdata))?;
        }
        let existing_version = std::fs::read_to_string(pgdata.join("PG_VERSION"))
            .ok()
            .map(|v| v.trim().to_owned());
        let bin_dir = match &options.bin_dir {
            Some(dir)
                if ["initdb", "pg_ctl", "postgres"]
                    .iter()
                    .all(|b| dir.join(b).is_file()) =>
            {
                dir.clone()
            }
            Some(_) => return Err(EmbeddedError::NoBinaries),
            None => find_binaries(existing_version.as_deref())?,
        };
        let mut cluster = EmbeddedCluster {
            pgdata,
            relocated,
            bin_dir,
            run_as,
            started_here: false,
            watchdog: None,
        };
        if existing_version.is_none() {
            created.filling(&cluster.pgdata);
            cluster.initdb(options)?;
        }
        if !cluster.is_running()? {
            cluster.pg_ctl_start()?;
            cluster.started_here = true;
            cluster.watchdog = cluster.spawn_watchdog();
        }
        Ok(cluster)
    }

    /// When the cluster is not in the folder asked for: that folder (a link to
    /// [`pgdata`](Self::pgdata)) and why.
    pub fn relocation(&self) -> Option<&Relocation> {
        self.relocated.as_ref()
    }

    /// The folder holding the cluster and its socket.
    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// Whether this process started the server (and so stops it).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// A libpq connection string for `dbname` over the cluster's socket.
    pub fn database_url(&self, dbname: &str) -> String {
        format!(
            "host={} port=5432 user={SUPERUSER} dbname={}",
            libpq_quote(&self.pgdata.to_string_lossy()),
            libpq_quote(dbname)
        )
    }

    /// The same for the runtime role, [`RUNTIME_ROLE`].
    pub fn runtime_url(&self, dbname: &str) -> String {
        format!(
            "host={} port=5432 user={RUNTIME_ROLE} dbname={}",
            libpq_quote(&self.pgdata.to_string_lossy()),
            libpq_quote(dbname)
        )
    }

    /// Creates `dbname` and the runtime role unless they exist. The role gets its
    /// rights when the schema is migrated.
    pub fn ensure_database(&self, dbname: &str) -> Result<(), EmbeddedError> {
        let mut conn = PgConnection::establish(&self.database_url("postgres"))
            .map_err(|e| EmbeddedError::Connect(e.to_string()))?;
        let exists = diesel::select(diesel::dsl::exists(
            pg_database::table.filter(pg_database::datname.eq(dbname)),
        ))
        .get_result::<bool>(&mut conn)
        .map_err(|e| EmbeddedError::Connect(e.to_string()))?;
        if !exists {
            diesel::sql_query(format!("CREATE DATABASE {}", super::quote_ident(dbname)))
                .execute(&mut conn)
                .map_err(|e| EmbeddedError::Connect(e.to_string()))?;
        }
        // Trust authentication over the owner-only socket: no password to keep.
        diesel::sql_query(format!(
            "DO $$ BEGIN \
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{RUNTIME_ROLE}') \
                 THEN CREATE ROLE {RUNTIME_ROLE} LOGIN; END IF; \
             END $$"
        ))
        .execute(&mut conn)
        .map_err(|e| EmbeddedError::Connect(e.to_string()))?;
        // A cluster made before the runtime role existed: give the role its rights on
        // the schema now, so that commands that do not migrate (`audit verify`) work
        // as it from the first start.
        let mut db = PgConnection::establish(&self.database_url(dbname))
            .map_err(|e| EmbeddedError::Connect(e.to_string()))?;
        #[derive(QueryableByName)]
        struct Migrated {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            migrated: bool,
        }
        let migrated = diesel::sql_query("SELECT to_regclass('audit_events') IS NOT NULL AS migrated")
            .get_result::<Migrated>(&mut db)
            .map_err(|e| EmbeddedError::Connect(e.to_string()))?
            .migrated;
        if migrated {
            super::roles::grant_runtime(&mut db, RUNTIME_ROLE)
                .map_err(|e| EmbeddedError::Connect(e.to_string()))?;
        }
        Ok(())
    }

    /// Stops the server if this process started it. Idempotent.
    pub fn stop(&mut self) -> Result<(), EmbeddedError> {
        if !self.started_here {
            return Ok(());
        }
        self.started_here = false;
        let pgdata = self.pgdata.clone();
        let stopped = self.run(
            "pg_ctl stop",
            self.pg_ctl()
                .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
                .arg(&pgdata),
        );
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        stopped.map(|_| ())
    }

    /// A process that stops the cluster once its stdin (a pipe whose other end only
    /// this process holds) closes: when this process exits, however it exits.
    fn spawn_watchdog(&self) -> Option<Child> {
        let script = r#"cat >/dev/null; exec "$0" stop -D "$1" -m fast -w -t 60 >/dev/null 2>&1"#;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .arg(self.bin_dir.join("pg_ctl"))
            .arg(&self.pgdata)
            .current_dir(&self.pgdata)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        match cmd.spawn() {
            Ok(child) => Some(child),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the embedded cluster's watchdog");
                None
            }
        }
    }

    fn initdb(&self, options: &ClusterOptions) -> Result<(), EmbeddedError> {
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(&self.pgdata).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ]);
        if !options.durable {
            cmd.arg("--no-sync");
        }
        self.run("initdb", &mut cmd)?;

        // Only the socket in our own folder; no TCP at all. Trust authentication is
        // safe because the folder is readable by the cluster's owner only.
        let mut conf = String::from("\n# Added by carewire: a private cluster on a Unix socket only.\n");
        let _ = writeln!(conf, "listen_addresses = ''");
        let _ = writeln!(conf, "unix_socket_directories = '{}'", self.pgdata.display());
        let _ = writeln!(conf, "unix_socket_permissions = 0700");
        let _ = writeln!(conf, "max_connections = {}", options.max_connections);
        if !options.durable {
            let _ = writeln!(
                conf,
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off"
            );
        }
        let path = self.pgdata.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&path).map_err(|source| EmbeddedError::Io {
            path: path.clone(),
            source,
        })?;
        existing.push_str(&conf);
        std::fs::write(&path, existing).map_err(|source| EmbeddedError::Io { path, source })?;
        Ok(())
    }

    fn is_running(&self) -> Result<bool, EmbeddedError> {
        let output = self
            .pg_ctl()
            .arg("status")
            .arg("-D")
            .arg(&self.pgdata)
            .output()
            .map_err(|e| self.spawn_error("pg_ctl status", e))?;
        // 0: running; 3: not running; 4: no usable data folder.
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(EmbeddedError::Command {
                what: "pg_ctl status".into(),
                detail: tail(&output),
            }),
        }
    }

    fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        let log = self.pgdata.join("carewire-postgres.log");
        let pgdata = self.pgdata.clone();
        self.run(
            "pg_ctl start",
            self.pg_ctl()
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&pgdata)
                .arg("-l")
                .arg(&log),
        )
        .map_err(|e| match e {
            // pg_ctl only says "examine the log output": bring the log's last lines,
            // since a failed first start removes the folder that holds it.
            EmbeddedError::Command { what, detail } => {
                let log_tail = std::fs::read_to_string(&log)
                    .map(|text| {
                        let lines: Vec<&str> = text.lines().collect();
                        lines[lines.len().saturating_sub(8)..].join("\n")
                    })
                    .unwrap_or_default();
                EmbeddedError::Command {
                    what,
                    detail: format!("{detail}\n{log_tail}\n(see {})", log.display()),
                }
            }
            other => other,
        })?;
        Ok(())
    }

    fn pg_ctl(&self) -> Command {
        self.command("pg_ctl")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir(&self.pgdata)
            .env_remove("PGDATA")
            .env("LC_ALL", "C");
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid).gid(user.gid).env("HOME", &self.pgdata);
        }
        cmd
    }

    fn run(&self, what: &str, cmd: &mut Command) -> Result<Output, EmbeddedError> {
        let output = cmd.output().map_err(|e| self.spawn_error(what, e))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(EmbeddedError::Command {
                what: what.into(),
                detail: tail(&output),
            })
        }
    }

    fn spawn_error(&self, what: &str, e: io::Error) -> EmbeddedError {
        EmbeddedError::Command {
            what: what.into(),
            detail: format!(
                "could not start it (binaries in {}, working folder {}{}): {e}",
                self.bin_dir.display(),
                self.pgdata.display(),
                match &self.run_as {
                    Some(user) => format!(", as `{}`", user.name),
                    None => String::new(),
                }
            ),
        }
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "stopping the embedded PostgreSQL cluster failed");
        }
    }
}

diesel::table! {
    pg_database (datname) {
        datname -> Text,
    }
}

/// When we run as root, the uid and gid of the user the cluster runs as.
fn unprivileged_user() -> Result<Option<RunAs>, EmbeddedError> {
    if id(&["-u"]).as_deref() != Some("0") {
        return Ok(None);
    }
    let uid = id(&["-u", UNPRIVILEGED_USER]).and_then(|v| v.parse().ok());
    let gid = id(&["-g", UNPRIVILEGED_USER]).and_then(|v| v.parse().ok());
    match (uid, gid) {
        (Some(uid), Some(gid)) => Ok(Some(RunAs {
            name: UNPRIVILEGED_USER.to_owned(),
            uid,
            gid,
        })),
        _ => Err(EmbeddedError::NoUnprivilegedUser),
    }
}

fn id(args: &[&str]) -> Option<String> {
    let output = Command::new("id").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Finds a folder holding initdb, pg_ctl and postgres. With an existing cluster,
/// prefers binaries of its major version (a cluster only opens with its own).
fn find_binaries(wanted_major: Option<&str>) -> Result<PathBuf, EmbeddedError> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    // Debian and Ubuntu keep each major version apart.
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versioned: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((major, e.path().join("bin")))
            })
            .collect();
        versioned.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
        if let Some(major) = wanted_major.and_then(|m| m.parse::<u32>().ok()) {
            versioned.sort_by_key(|(v, _)| *v != major);
        }
        candidates.extend(versioned.into_iter().map(|(_, dir)| dir));
    }
    // Anything on PATH, with symlinks resolved to the folder that holds `postgres`.
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let pg_ctl = dir.join("pg_ctl");
            if let Ok(real) = std::fs::canonicalize(&pg_ctl)
                && let Some(parent) = real.parent()
            {
                candidates.push(parent.to_path_buf());
            }
        }
    }
    candidates
        .into_iter()
        .find(|dir| complete(dir))
        .ok_or(EmbeddedError::NoBinaries)
}

/// Quotes a value for a libpq key=value connection string.
fn libpq_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn tail(output: &Output) -> String {
    let text = [output.stderr.as_slice(), output.stdout.as_slice()]
        .iter()
        .map(|b| String::from_utf8_lossy(b).trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(8);
    let tail = lines[start..].join("\n");
    if tail.is_empty() {
        format!("exited with {}", output.status)
    } else {
        tail
    }
}

/// Whether PostgreSQL's server binaries can be found on this machine.
pub fn binaries_available() -> bool {
    find_binaries(None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_quote_paths_with_spaces_and_quotes() {
        assert_eq!(libpq_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(libpq_quote("it's"), "'it\\'s'");
    }
}
