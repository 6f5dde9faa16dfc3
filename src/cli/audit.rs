//! `carewire audit verify`, `carewire audit export` and `carewire audit public-key`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use carewire_audit::store;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};
use diesel::Connection;
use diesel::pg::PgConnection;
use ed25519_dalek::VerifyingKey;
use indicatif::{ProgressBar, ProgressStyle};

use crate::audit::trust;
use crate::audit::view::EventView;
use crate::audit::{Actor, AuditEvent, Code, DetailValue, action, purpose, resource};
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit chain and check every signed checkpoint, in the database and
    /// in the external checkpoint file, with public keys only. Exits 0 when the log is
    /// intact; 1 when it was tampered with (naming the first bad sequence number and
    /// what is wrong); 2 when it could not be verified (saying why). Only reads: a
    /// read-only database role will do.
    Verify(VerifyArgs),
    /// Write audit events recorded in a time range to standard output, one JSON object
    /// per line: Carewire's own form, or FHIR R4 AuditEvent resources (NDJSON).
    Export(ExportArgs),
    /// Print the public key of the configured checkpoint signing key (base64), to hand
    /// to an auditor for `audit verify --trusted-key`.
    PublicKey,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The external checkpoint file (JSON lines). Default: CAREWIRE_AUDIT_CHECKPOINT_FILE.
    /// A missing or unreadable file means the log cannot be verified (exit 2).
    #[arg(long, value_name = "FILE")]
    pub checkpoints: Option<PathBuf>,
    /// Verify against the checkpoints in the database only. A database restored to
    /// an earlier checkpoint then looks intact: use it only when no checkpoint file
    /// was ever kept.
    #[arg(long, conflicts_with = "checkpoints")]
    pub no_external_checkpoints: bool,
    /// A public key trusted to have signed checkpoints: base64 of its 32 bytes, as
    /// `carewire audit public-key` prints it. Repeat for keys rotated out. When given,
    /// only these keys are trusted. Default: CAREWIRE_AUDIT_TRUSTED_KEYS and the keys
    /// in the public key file.
    #[arg(long = "trusted-key", value_name = "BASE64", value_parser = trust::parse_public_key)]
    pub trusted_keys: Vec<VerifyingKey>,
    /// The public key file the server writes beside its checkpoint file. Default:
    /// `<checkpoint file stem>.keys.jsonl` in the checkpoint file's folder.
    #[arg(long, value_name = "FILE", conflicts_with = "trusted_keys")]
    pub trusted_key_file: Option<PathBuf>,
    /// Start from the signed checkpoint covering this many entries instead of the
    /// beginning (entries before it are trusted).
    #[arg(long, value_name = "SIZE")]
    pub from_checkpoint: Option<u64>,
    /// Database connections reading at once (default: the number of CPUs). Each
    /// checks its entries' own hashes; one pass checks links, order and checkpoints.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Events recorded at or after this time (RFC 3339, or a date as YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Events recorded before this time (RFC 3339, or a date as YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// Carewire's JSON form of each event.
    Jsonl,
    /// FHIR R4 AuditEvent resources, one per line (FHIR bulk-data NDJSON).
    Fhir,
}

fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| "expected RFC 3339 (2026-11-25T09:00:00Z) or a date (2026-11-25)".to_owned())
}

fn connect(settings: &Settings) -> anyhow::Result<PgConnection> {
    let url = settings.database.url.as_ref().context("no database configured")?;
    PgConnection::establish(url.expose()).with_context(|| format!("cannot connect to {}", url.redacted()))
}

/// What `verify` found. Failing to verify at all is an error (exit 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Intact,
    Tampered,
}

/// The keys to trust, and where they came from (for the report).
fn trusted_keys(
    settings: &Settings,
    args: &VerifyArgs,
    checkpoint_file: &Path,
) -> anyhow::Result<(Vec<VerifyingKey>, String)> {
    if !args.trusted_keys.is_empty() {
        return Ok((args.trusted_keys.clone(), "--trusted-key".to_owned()));
    }
    let mut keys = crate::crypto::audit_key::trusted_keys(settings, None)?;
    let mut sources = Vec::new();
    if !keys.is_empty() {
        sources.push("CAREWIRE_AUDIT_TRUSTED_KEYS".to_owned());
    }
    let key_file = args
        .trusted_key_file
        .clone()
        .unwrap_or_else(|| trust::key_file_for(checkpoint_file));
    // A named file must be readable; the default one may be absent when the
    // environment names the keys.
    if args.trusted_key_file.is_some() || keys.is_empty() || key_file.exists() {
        for key in trust::read_key_file(&key_file).context(
            "no trusted public key: pass --trusted-key, set CAREWIRE_AUDIT_TRUSTED_KEYS, or point \
             --trusted-key-file at the keys file the server writes beside its checkpoints",
        )? {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        sources.push(key_file.display().to_string());
    }
    Ok((keys, sources.join(" and ")))
}

#[expect(clippy::print_stdout, reason = "command-line output")]
pub fn verify(settings: &Settings, args: &VerifyArgs) -> anyhow::Result<Verdict> {
    let file = args
        .checkpoints
        .clone()
        .unwrap_or_else(|| settings.audit.checkpoint_file.clone());
    let (keys, key_source) = trusted_keys(settings, args, &file)?;
    let external = if args.no_external_checkpoints {
        Vec::new()
    } else {
        crate::audit::verification::read_checkpoint_file(&file)?
    };
    let mut conn = connect(settings)?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} verifying {pos}/{len} entries {bar:40} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let url = settings.database.url.as_ref().context("no database configured")?;
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        usize::from,
    );
    let outcome = crate::audit::verification::verify_database(
        &mut conn,
        crate::audit::verification::Readers::Parallel {
            url: url.expose(),
            jobs,
            page: crate::audit::verification::PAGE_ENTRIES,
        },
        &keys,
        external.clone(),
        args.from_checkpoint,
        |seq, total| {
            if seq.is_multiple_of(4096) || seq == total {
                bar.set_length(total);
                bar.set_position(seq);
            }
        },
    )?;
    bar.finish_and_clear();
    match outcome {
        Ok(report) => {
            let secs = report.elapsed.as_secs_f64().max(1e-9);
            println!(
                "intact: {} entries verified{} in {:.2} s ({:.0} entries/s)",
                report.summary.entries,
                match args.from_checkpoint {
                    Some(size) => format!(" after the trusted checkpoint at {size}"),
                    None => String::new(),
                },
                secs,
                report.summary.entries as f64 / secs
            );
            let outside = if args.no_external_checkpoints {
                "none from outside the database: --no-external-checkpoints".to_owned()
            } else {
                format!("{} from {}", external.len(), file.display())
            };
            println!(
                "checkpoints: {} known ({outside}), {} matched; newest covers {} of {} entries",
                report.checkpoints,
                report.summary.checkpoints_matched,
                report.latest_checkpoint.unwrap_or(0),
                report.summary.head.size
            );
            println!(
                "trusted keys: {} ({key_source})",
                keys.iter()
                    .map(carewire_audit::checkpoint::key_id)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("head: {}", hex::encode(report.summary.head.hash));
            if report.unsealed > 0 {
                println!("unsealed: {} recent events wait for the sealer", report.unsealed);
            }
            Ok(Verdict::Intact)
        }
        Err(finding) => {
            println!("TAMPERED: {finding}");
            Ok(Verdict::Tampered)
        }
    }
}

pub fn export(settings: &Settings, args: &ExportArgs) -> anyhow::Result<()> {
    let mut conn = connect(settings)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut after = 0i64;
    let mut exported = 0i64;
    loop {
        let rows = store::export_page(&mut conn, args.since, args.until, after, 5_000)?;
        let Some(last) = rows.last() else { break };
        after = last.id();
        for row in rows {
            let line = match args.format {
                ExportFormat::Jsonl => serde_json::to_string(&EventView::from(row))?,
                ExportFormat::Fhir => serde_json::to_string(&carewire_audit::fhir::audit_event(&row)?)?,
            };
            writeln!(out, "{line}")?;
            exported += 1;
        }
    }
    out.flush()?;
    // Taking a copy of the audit trail is itself an access worth recording.
    let mut event = AuditEvent::new(
        Actor::System {
            component: Code::new("cli"),
        },
        action::EXECUTE,
        resource::AUDIT_LOG,
        purpose::SYSTEM_ADMINISTRATION,
    )
    .detail(Code::new("operation"), DetailValue::Code(Code::new("export")))
    .detail(Code::new("exported"), DetailValue::Count(exported))
    .detail(
        Code::new("format"),
        DetailValue::Code(match args.format {
            ExportFormat::Jsonl => Code::new("jsonl"),
            ExportFormat::Fhir => Code::new("fhir"),
        }),
    );
    if let Some(since) = args.since {
        event = event.detail(Code::new("since_unix"), DetailValue::Count(since.timestamp()));
    }
    if let Some(until) = args.until {
        event = event.detail(Code::new("until_unix"), DetailValue::Count(until.timestamp()));
    }
    store::record(&mut conn, &event)?;
    drop(out);
    let _ = std::io::stdout().flush();
    Ok(())
}

#[expect(clippy::print_stdout, reason = "command-line output")]
pub fn public_key(settings: &Settings) -> anyhow::Result<()> {
    let signer = crate::crypto::audit_key::configured_signer(settings)?.context(
        "no audit signing key is configured (CAREWIRE_AUDIT_SIGNING_KEY or CAREWIRE_AUDIT_SIGNING_KEY_FILE) \
         and no development key was generated yet",
    )?;
    println!("{}", trust::format_public_key(&signer.verifying_key()));
    eprintln!("key id {}", signer.key_id());
    Ok(())
}
