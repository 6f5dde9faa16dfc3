//! The `carewire` binary: parse the command line and settings, start logging, run.

use std::process::ExitCode;

use clap::Parser;

use carewire::cli::{self, Cli};
use carewire::config::Settings;

/// With the `mimalloc` feature, mimalloc instead of glibc's malloc: in the
/// consultation relay benchmark glibc spent about a third of the server's CPU in
/// free-list consolidation; mimalloc keeps more memory per idle socket. See the
/// feature's comment in Cargo.toml.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before anything can connect: see `init_libpq` (a start-up that fails exits
    // while the pool's threads may still be inside libpq's connect).
    carewire::db::init_libpq();
    let cli = Cli::parse();
    let settings = match Settings::from_env(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("carewire: {e}");
            return ExitCode::from(2);
        }
    };
    carewire::telemetry::init(&settings.log);
    // A panic is logged through tracing (so JSON logs stay JSON) with its location.
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
        tracing::error!(
            location = location.as_deref().unwrap_or("unknown"),
            "panic: {info}"
        );
    }));

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("carewire: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli.command, settings)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("carewire: {e:#}");
            ExitCode::FAILURE
        }
    }
}
