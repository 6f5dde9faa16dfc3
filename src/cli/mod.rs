//! The command line: `serve`, `migrate`, `user create`, and the operators' commands
//! in [`keys`] (`carewire keys ...`) and [`audit`] (`carewire audit verify|export`).

pub mod audit;
pub mod keys;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use diesel::Connection;
use diesel::pg::PgConnection;
use secrecy::{ExposeSecret, SecretString};

use crate::accounts::{self, Email};
use crate::auth::password;
use crate::config::{DatabaseUrl, Settings};
use crate::context::Role;
use crate::crypto::{Crypto, Kek};
use crate::db::embedded::{ClusterOptions, EmbeddedCluster};
use crate::startup::{Application, BuildOptions};

/// Carewire: a real-time backend for healthcare scheduling and telemedicine.
///
/// Settings come from environment variables (DATABASE_URL, CAREWIRE_*) and an
/// optional TOML file; see the README for the full list. Without DATABASE_URL,
/// Carewire runs a private PostgreSQL cluster in CAREWIRE_DATA_DIR/pg.
#[derive(Debug, Parser)]
#[command(name = "carewire", version, about, long_about)]
pub struct Cli {
    /// TOML configuration file (keys are the setting names in lower case without
    /// the CAREWIRE_ prefix). Environment variables override it.
    #[arg(long, global = true, value_name = "FILE", env = "CAREWIRE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: apply pending migrations, then serve HTTP on CAREWIRE_LISTEN
    /// (default 127.0.0.1:8080) until SIGINT or SIGTERM.
    Serve {
        /// Seed the demo clinic (same as CAREWIRE_DEMO=true): a provider with a
        /// published password, always available for a video visit. Development only;
        /// refused with CAREWIRE_ENVIRONMENT=production.
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Manage accounts without the API (for example, the first admin).
    #[command(subcommand)]
    User(UserCommand),
    /// Verify or export the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Manage the keys that encrypt patient data: status, rotate, rewrap, retire,
    /// rotate-kek.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a provider or admin account. The password is read from a prompt, or
    /// from the first line of standard input when it is not a terminal; never from
    /// the command line, where other users could see it.
    Create {
        /// The account's email (its sign-in name).
        #[arg(long)]
        email: String,
        /// What the account may do.
        #[arg(long, value_enum)]
        role: CliRole,
        /// The name others see (in patients' access logs, for example).
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CliRole {
    Provider,
    Admin,
}

impl From<CliRole> for Role {
    fn from(role: CliRole) -> Role {
        match role {
            CliRole::Provider => Role::Provider,
            CliRole::Admin => Role::Admin,
        }
    }
}

/// Runs a command to completion; the exit code says how it ended.
pub async fn run(command: Command, mut settings: Settings) -> anyhow::Result<ExitCode> {
    use audit::{AuditCommand, Verdict};
    if let Command::Serve { demo: true } = command {
        settings.demo = true;
        // Refuse before starting an embedded cluster for nothing.
        settings.check_demo()?;
    }
    let verifying = matches!(command, Command::Audit(AuditCommand::Verify(_)));
    // The public key comes from the settings alone: no database to start for it.
    if let Command::Audit(AuditCommand::PublicKey) = command {
        return audit::public_key(&settings).map(|()| ExitCode::SUCCESS);
    }
    let cluster = match resolve_database(&mut settings).await {
        Ok(cluster) => cluster,
        Err(e) if verifying => {
            eprintln!("carewire: COULD NOT VERIFY the audit log: {e:#}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e),
    };
    let result = match command {
        Command::Serve { .. } => serve(settings).await.map(|()| ExitCode::SUCCESS),
        Command::Migrate => migrate(settings).await.map(|()| ExitCode::SUCCESS),
        Command::User(UserCommand::Create { email, role, name }) => {
            create_user(settings, &email, role.into(), name.as_deref())
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify(args)) => {
            // 0 intact, 1 tampered, 2 could not tell: a script must never read a
            // failure to verify as either verdict.
            Ok(
                match tokio::task::spawn_blocking(move || audit::verify(&settings, &args))
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|verdict| verdict)
                {
                    Ok(Verdict::Intact) => ExitCode::SUCCESS,
                    Ok(Verdict::Tampered) => ExitCode::from(1),
                    Err(e) => {
                        eprintln!("carewire: COULD NOT VERIFY the audit log: {e:#}");
                        ExitCode::from(2)
                    }
                },
            )
        }
        Command::Audit(AuditCommand::PublicKey) => audit::public_key(&settings).map(|()| ExitCode::SUCCESS),
        Command::Keys(keys) => tokio::task::spawn_blocking(move || keys::run(&settings, &keys))
            .await?
            .map(|()| ExitCode::SUCCESS),
        Command::Audit(AuditCommand::Export(args)) => {
            tokio::task::spawn_blocking(move || audit::export(&settings, &args))
                .await?
                .map(|()| ExitCode::SUCCESS)
        }
    };
    if let Some(mut cluster) = cluster {
        let stopped = tokio::task::spawn_blocking(move || cluster.stop()).await;
        if let Ok(Err(e)) = stopped {
            tracing::warn!(error = %e, "stopping the embedded PostgreSQL cluster failed");
        }
    }
    result
}

/// Starts the embedded cluster when no DATABASE_URL is set, and says once which
/// database is used.
async fn resolve_database(settings: &mut Settings) -> anyhow::Result<Option<EmbeddedCluster>> {
    if let Some(url) = &settings.database.url {
        tracing::info!(database = %url.redacted(), "using the database from DATABASE_URL");
        return Ok(None);
    }
    let pgdata = settings.data_dir.join("pg");
    let options = ClusterOptions {
        bin_dir: settings.database.pg_bin_dir.clone(),
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::spawn_blocking(move || {
        let cluster = EmbeddedCluster::start(&pgdata, options)?;
        cluster.ensure_database("carewire")?;
        Ok::<_, anyhow::Error>(cluster)
    })
    .await??;
    tracing::info!(
        folder = %cluster.pgdata().display(),
        linked_from = cluster.relocation().map(|r| r.requested.display().to_string()),
        database = "carewire",
        started_now = cluster.started_here(),
        "using the embedded PostgreSQL cluster (Unix socket only; set DATABASE_URL to use another server)"
    );
    // The server runs as a role that owns nothing; the superuser only migrates.
    settings.database.url = Some(DatabaseUrl::new(cluster.runtime_url("carewire")));
    if settings.database.migration_url.is_none() {
        settings.database.migration_url = Some(DatabaseUrl::new(cluster.database_url("carewire")));
    }
    Ok(Some(cluster))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings, BuildOptions::default()).await?;
    app.run_until(shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

fn connect(settings: &Settings) -> anyhow::Result<PgConnection> {
    let url = settings.database.url.as_ref().context("no database configured")?;
    PgConnection::establish(url.expose()).with_context(|| format!("cannot connect to {}", url.redacted()))
}

/// Migrates as the owner role (`CAREWIRE_MIGRATION_DATABASE_URL`, else the one
/// `DATABASE_URL` names) and grants the runtime role (`DATABASE_URL`) its rights.
#[expect(clippy::print_stdout, reason = "command-line output")]
async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let migrated = tokio::task::spawn_blocking(move || {
        let mut runtime = connect(&settings)?;
        match &settings.database.migration_url {
            Some(owner) => {
                let mut owner = PgConnection::establish(owner.expose())
                    .with_context(|| format!("cannot connect to {}", owner.redacted()))?;
                crate::db::migrate(&mut owner, &mut runtime)
            }
            None => crate::db::migrate(&mut connect(&settings)?, &mut runtime),
        }
    })
    .await??;
    if migrated.applied.is_empty() {
        println!("The database is up to date.");
    } else {
        for version in &migrated.applied {
            println!("applied {version}");
        }
        println!("Applied {} migration(s).", migrated.applied.len());
    }
    match &migrated.granted {
        Some(role) => println!("Granted the runtime role {role} its rights."),
        None => println!(
            "DATABASE_URL's role owns the schema: set CAREWIRE_MIGRATION_DATABASE_URL to an owner role \
             and DATABASE_URL to a runtime role for production (README: database roles)."
        ),
    }
    Ok(())
}

/// The database ready for a command: migrated as `serve` would at start-up.
pub fn prepared_connection(settings: &Settings) -> anyhow::Result<PgConnection> {
    let mut conn = connect(settings)?;
    let owner = settings
        .database
        .migration_url
        .as_ref()
        .map(|u| u.expose().to_owned());
    crate::db::prepare(owner.as_deref(), &mut conn)?;
    Ok(conn)
}

#[expect(clippy::print_stdout, reason = "command-line output")]
async fn create_user(settings: Settings, email: &str, role: Role, name: Option<&str>) -> anyhow::Result<()> {
    let email = Email::parse(email).map_err(|_| anyhow::anyhow!("--email is not a valid email address"))?;
    let display_name =
        accounts::parse_display_name(role, name).map_err(|e| anyhow::anyhow!("--name {}", reason_of(&e)))?;
    let password = read_password()?;
    let hints: Vec<String> = email.password_hints().into_iter().map(str::to_owned).collect();
    let (kek, _) = Kek::from_settings(&settings)?;
    let account_id = tokio::task::spawn_blocking(move || -> anyhow::Result<uuid::Uuid> {
        let hints: Vec<&str> = hints.iter().map(String::as_str).collect();
        password::check_policy(&password, &hints)
            .map_err(|e| anyhow::anyhow!("the password {}", reason_of(&e)))?;
        let hash = password::hash(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut conn = prepared_connection(&settings)?;
        let crypto = open_crypto(&settings, kek)?;
        let account = accounts::create(&mut conn, &crypto, &email, role, hash).map_err(|e| match e {
            crate::Error::Conflict { .. } => anyhow::anyhow!("an account with this email already exists"),
            other => anyhow::anyhow!("{other}"),
        })?;
        accounts::set_display_name(&mut conn, account.id, display_name.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(account.id)
    })
    .await??;
    println!("Created {role} account {account_id}.");
    Ok(())
}

/// The key ring, on its own connection.
pub fn open_crypto(settings: &Settings, kek: Kek) -> anyhow::Result<Crypto> {
    let url = settings.database.url.as_ref().context("no database configured")?;
    Ok(Crypto::open(
        url.expose(),
        kek,
        crate::crypto::CryptoOptions {
            max_encryptions_per_key: settings.crypto.max_encryptions_per_key,
        },
    )?)
}

fn reason_of(err: &crate::Error) -> String {
    match err {
        crate::Error::Validation { reason, .. } => reason.to_string(),
        other => other.to_string(),
    }
}

/// Reads the new password from a prompt (typed twice) or from standard input.
fn read_password() -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = SecretString::from(rpassword::prompt_password("Password: ")?);
        let second = SecretString::from(rpassword::prompt_password("Repeat the password: ")?);
        anyhow::ensure!(
            first.expose_secret() == second.expose_secret(),
            "the two passwords differ"
        );
        Ok(first)
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        line.clear();
        anyhow::ensure!(!password.is_empty(), "no password on standard input");
        Ok(SecretString::from(password))
    }
}
