//! `carewire keys status|rotate|rewrap|retire|rotate-kek`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use diesel::pg::PgConnection;
use indicatif::{ProgressBar, ProgressStyle};
use zeroize::Zeroizing;

use crate::config::Settings;
use crate::crypto::{Kek, rotation};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show each data key version: when it was made, how many encryptions it has done,
    /// and how many fields and rows still use it.
    Status,
    /// Create a new data key version. New writes on every instance use it within
    /// CAREWIRE_KEYRING_REFRESH_SECS; older versions still decrypt.
    Rotate,
    /// Re-encrypt every field still on an older version with the current one, while
    /// the server runs. Safe to interrupt and run again: it continues where it stopped.
    Rewrap {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
    /// Destroy an old data key version. Refused while any field still uses it (run
    /// rewrap first), while it is current, or in the minute after it stopped being
    /// current (instances may still be writing with it).
    Retire {
        /// The version to retire.
        version: u32,
    },
    /// Rewrap every data key and the index root under a new KEK. Afterwards, configure
    /// the new KEK (CAREWIRE_KEK or CAREWIRE_KEK_FILE) and restart the servers; running
    /// servers keep working until then.
    RotateKek {
        /// A file holding the new KEK (base64 of 32 random bytes).
        #[arg(long, value_name = "FILE")]
        new_kek_file: PathBuf,
    },
}

/// Records a key operation in the audit log: who changed the keys is part of the
/// story of who could read what.
fn record(
    conn: &mut PgConnection,
    operation: &'static str,
    details: &[(&'static str, i64)],
) -> anyhow::Result<()> {
    use carewire_audit::event::{Actor, AuditEvent, Code, DetailValue, action, purpose};
    let mut event = AuditEvent::new(
        Actor::System {
            component: Code::new("cli"),
        },
        action::EXECUTE,
        Code::new("data_key"),
        purpose::SYSTEM_ADMINISTRATION,
    )
    .detail(Code::new("operation"), DetailValue::Code(Code::new(operation)));
    for (key, value) in details {
        event = event.detail(Code::new(key), DetailValue::Count(*value));
    }
    crate::audit::record(conn, &event).map_err(|e| anyhow::anyhow!("{e}"))
}

#[expect(clippy::print_stdout, reason = "command-line output")]
pub fn run(settings: &Settings, command: &KeysCommand) -> anyhow::Result<()> {
    let mut conn = super::prepared_connection(settings)?;
    let (kek, _) = Kek::from_settings(settings)?;
    match command {
        KeysCommand::Status => {
            println!(
                "{:>7}  {:<8}  {:<20}  {:>12}  {:>8}  {:>8}",
                "version", "state", "created", "encryptions", "fields", "rows"
            );
            for v in rotation::status(&mut conn)? {
                let state = if v.retired_at.is_some() {
                    "retired"
                } else if v.current {
                    "current"
                } else {
                    "active"
                };
                println!(
                    "{:>7}  {:<8}  {:<20}  {:>12}  {:>8}  {:>8}",
                    v.version,
                    state,
                    v.created_at.format("%Y-%m-%d %H:%M:%S"),
                    v.encryptions,
                    v.fields,
                    v.rows
                );
            }
        }
        KeysCommand::Rotate => {
            let crypto = super::open_crypto(settings, kek)?;
            let version = rotation::rotate(&crypto, &mut conn)?;
            record(&mut conn, "rotate", &[("version", i64::from(version))])?;
            println!(
                "Data key version {version} is now current. Run `carewire keys rewrap` to move existing fields to it."
            );
        }
        KeysCommand::Rewrap { batch } => {
            anyhow::ensure!((1..=100_000).contains(batch), "--batch must be from 1 to 100000");
            let crypto = super::open_crypto(settings, kek)?;
            let total = rotation::rows_to_scan(&mut conn)?;
            let bar = if std::io::stderr().is_terminal() {
                let bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} rewrapping {pos}/{len} rows {bar:40} {per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar
            } else {
                ProgressBar::hidden()
            };
            let started = std::time::Instant::now();
            let report = rotation::rewrap(&crypto, &mut conn, *batch, |done| bar.set_position(done))?;
            bar.finish_and_clear();
            record(
                &mut conn,
                "rewrap",
                &[
                    ("version", i64::from(crypto.current_version())),
                    ("rows", i64::try_from(report.rows_rewrapped).unwrap_or(i64::MAX)),
                    (
                        "fields",
                        i64::try_from(report.fields_rewrapped).unwrap_or(i64::MAX),
                    ),
                ],
            )?;
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            println!(
                "Rewrapped {} field(s) in {} of {} row(s) to version {} in {:.2} s ({:.0} rows/s).",
                report.fields_rewrapped,
                report.rows_rewrapped,
                report.rows_scanned,
                crypto.current_version(),
                secs,
                report.rows_scanned as f64 / secs
            );
        }
        KeysCommand::Retire { version } => {
            rotation::retire(&mut conn, *version, settings.crypto.retire_grace)?;
            record(&mut conn, "retire", &[("version", i64::from(*version))])?;
            println!("Data key version {version} is retired and its key destroyed.");
        }
        KeysCommand::RotateKek { new_kek_file } => {
            let text = Zeroizing::new(
                std::fs::read_to_string(new_kek_file)
                    .with_context(|| format!("cannot read {}", new_kek_file.display()))?,
            );
            let bytes = Zeroizing::new(crate::config::parse_key(&text).map_err(|e| anyhow::anyhow!("{e}"))?);
            let array: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .context("the new KEK must be 32 bytes")?;
            let new = Kek::from_bytes(array);
            anyhow::ensure!(new.id() != kek.id(), "the new KEK is the one already in use");
            let count = rotation::rotate_kek(&mut conn, &kek, &new)?;
            record(
                &mut conn,
                "rotate_kek",
                &[("keys", i64::try_from(count).unwrap_or(i64::MAX))],
            )?;
            println!(
                "Rewrapped {count} key(s) under the new KEK (id {}). Configure it and restart the servers.",
                new.id()
            );
        }
    }
    Ok(())
}
