//! The circuit breaker in front of the pool: while PostgreSQL cannot be reached,
//! requests are refused at once instead of each waiting the full acquire timeout.
//!
//! The pool reports every attempt to open a connection. [`TRIP_AFTER`] failures in a
//! row, with no success between them, open the breaker; while it is open a request
//! takes an idle connection if the pool has one and otherwise gets a 503 immediately.
//! One prober thread then tries a fresh connection every [`PROBE_EVERY`] and closes the
//! breaker the moment one succeeds (so does any connection the pool itself opens), so
//! the server is back within a probe interval of the database.
//!
//! The rule is [`Circuit`], pure and tested; [`Breaker`] shares it between threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Consecutive failed connection attempts that open the breaker. r2d2 retries a failed
/// connect within one acquire, so an outage reaches this within milliseconds, while a
/// single refused connection (a restart's last moment) does not.
pub const TRIP_AFTER: u32 = 3;

/// How often the prober tries the database while the breaker is open.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// The prober's own connect timeout: a database that accepts TCP but never answers
/// must not stall recovery for long.
const PROBE_CONNECT_TIMEOUT_SECS: u32 = 2;

/// What the circuit should do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Nothing,
    /// The breaker just opened: start probing.
    Opened,
    /// The breaker just closed: requests go through again.
    Closed,
}

/// The breaker's state: consecutive failures, and whether it is open.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Circuit {
    failures: u32,
    open: bool,
}

impl Circuit {
    /// A connection attempt failed.
    pub fn failed(&mut self) -> Change {
        self.failures = self.failures.saturating_add(1);
        if !self.open && self.failures >= TRIP_AFTER {
            self.open = true;
            Change::Opened
        } else {
            Change::Nothing
        }
    }

    /// A connection attempt succeeded.
    pub fn succeeded(&mut self) -> Change {
        self.failures = 0;
        if std::mem::take(&mut self.open) {
            Change::Closed
        } else {
            Change::Nothing
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }
}

/// The circuit shared by the pool's threads, the request path and the prober.
#[derive(Debug)]
pub struct Breaker {
    circuit: Mutex<Circuit>,
    /// Mirrors `circuit.open` so the request path reads it without the lock.
    open: AtomicBool,
    /// The URL the prober connects to.
    probe_url: String,
}

impl Breaker {
    pub fn new(url: &str) -> Arc<Breaker> {
        Arc::new(Breaker {
            circuit: Mutex::new(Circuit::default()),
            open: AtomicBool::new(false),
            probe_url: super::with_connect_timeout(url, PROBE_CONNECT_TIMEOUT_SECS),
        })
    }

    /// Whether requests should be refused rather than wait for a new connection.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Records a connection attempt by the pool (or the prober).
    pub fn record(self: &Arc<Self>, connected: bool) {
        let change = {
            let mut circuit = self
                .circuit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let change = if connected {
                circuit.succeeded()
            } else {
                circuit.failed()
            };
            self.open.store(circuit.is_open(), Ordering::Release);
            change
        };
        match change {
            Change::Opened => {
                metrics::counter!("db_breaker_opened_total").increment(1);
                metrics::gauge!("db_breaker_open").set(1.0);
                tracing::warn!(
                    "the database cannot be reached: answering 503 at once until it is back (probing every {} ms)",
                    PROBE_EVERY.as_millis()
                );
                self.start_prober();
            }
            Change::Closed => {
                metrics::gauge!("db_breaker_open").set(0.0);
                tracing::info!("the database is reachable again");
            }
            Change::Nothing => {}
        }
    }

    /// One thread per opening: it holds only a weak reference, so a pool that is
    /// dropped (a test's server, a CLI command) stops it.
    fn start_prober(self: &Arc<Self>) {
        let breaker: Weak<Breaker> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("carewire-db-probe".into())
            .spawn(move || probe(&breaker));
        if let Err(e) = spawned {
            // Without a prober the pool's own attempts still close the breaker.
            tracing::error!(error = %e, "starting the database prober failed");
        }
    }
}

fn probe(breaker: &Weak<Breaker>) {
    use diesel::Connection;
    loop {
        std::thread::sleep(PROBE_EVERY);
        let Some(breaker) = breaker.upgrade() else {
            return;
        };
        if !breaker.is_open() {
            return;
        }
        let connected = diesel::PgConnection::establish(&breaker.probe_url).is_ok();
        if connected {
            breaker.record(true);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Change, Circuit, TRIP_AFTER};

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_closes_on_the_first_success() {
        let mut circuit = Circuit::default();
        for _ in 1..TRIP_AFTER {
            assert_eq!(circuit.failed(), Change::Nothing);
        }
        assert!(!circuit.is_open());
        assert_eq!(circuit.failed(), Change::Opened);
        assert!(circuit.is_open());
        assert_eq!(circuit.failed(), Change::Nothing, "opens once");
        assert_eq!(circuit.succeeded(), Change::Closed);
        assert!(!circuit.is_open());
        assert_eq!(circuit.succeeded(), Change::Nothing);
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again() {
        let mut circuit = Circuit::default();
        for _ in 0..10 {
            for _ in 1..TRIP_AFTER {
                circuit.failed();
            }
            assert_eq!(circuit.succeeded(), Change::Nothing);
        }
        assert!(!circuit.is_open());
    }
}
