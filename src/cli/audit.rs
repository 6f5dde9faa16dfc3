//! `carewire audit verify` and `carewire audit export`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use carewire_audit::store;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};
use diesel::Connection;
use diesel::pg::PgConnection;
use indicatif::{ProgressBar, ProgressStyle};

use crate::audit::view::EventView;
use crate::audit::{Actor, AuditEvent, Code, DetailValue, action, purpose, resource};
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit chain and check every signed checkpoint, in the database and
    /// in the external checkpoint file. Exits 0 only when the log is intact; 1 when it
    /// was tampered with (naming the first bad sequence number and what is wrong).
    Verify(VerifyArgs),
    /// Write audit events recorded in a time range to standard output, one JSON object
    /// per line: Carewire's own form, or FHIR R4 AuditEvent resources (NDJSON).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The external checkpoint file (JSON lines). Default: CAREWIRE_AUDIT_CHECKPOINT_FILE.
    #[arg(long, value_name = "FILE")]
    pub checkpoints: Option<PathBuf>,
    /// Start from the signed checkpoint covering this many entries instead of the
    /// beginning (entries before it are trusted).
    #[arg(long, value_name = "SIZE")]
    pub from_checkpoint: Option<u64>,
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

/// What `verify` found, as an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Intact,
    Tampered,
}

#[expect(clippy::print_stdout, reason = "command-line output")]
pub fn verify(settings: &Settings, args: &VerifyArgs) -> anyhow::Result<Verdict> {
    let signer = crate::crypto::audit_key::checkpoint_signer(settings)?;
    let keys = crate::crypto::audit_key::trusted_keys(settings, Some(&signer))?;
    let file = args
        .checkpoints
        .clone()
        .unwrap_or_else(|| settings.audit.checkpoint_file.clone());
    let external = crate::audit::verification::read_checkpoint_file(&file)?;
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
    let outcome = crate::audit::verification::verify_database(
        &mut conn,
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
            println!(
                "checkpoints: {} known ({} from {}), {} matched; newest covers {} of {} entries",
                report.checkpoints,
                external.len(),
                file.display(),
                report.summary.checkpoints_matched,
                report.latest_checkpoint.unwrap_or(0),
                report.summary.head.size
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
