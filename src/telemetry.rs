//! The one place that builds the tracing subscriber.
//!
//! Text logs for people, JSON logs (one object per line, with the request span's
//! fields such as `request_id`) when `CAREWIRE_LOG_FORMAT=json`. What is logged is
//! decided where it is logged: ids and codes, never patient data or secrets.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. Returns `false` when one was already installed
/// (tests start several servers in one process).
pub fn init(settings: &LogSettings) -> bool {
    // Colours only for a person at a terminal: a log file or journald would keep the
    // escape codes, and `grep folder=` would miss what it looks for.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    install(settings, std::io::stderr, ansi)
}

/// Like [`init`], writing plain text to `writer` (tests capture the logs this way).
pub fn init_with_writer<W>(settings: &LogSettings, writer: W) -> bool
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    install(settings, writer, false)
}

fn install<W>(settings: &LogSettings, writer: W, ansi: bool) -> bool
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_span_events(FmtSpan::NONE)
        .with_target(true);
    let result = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.is_ok()
}
