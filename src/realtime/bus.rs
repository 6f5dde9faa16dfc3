//! How an instance learns that the event stream moved.
//!
//! Business transactions only insert outbox rows: nothing of theirs NOTIFYs, because
//! PostgreSQL serializes the commits of every transaction with a pending notification
//! on one global lock. Instead [`PgBus`] keeps one dedicated connection per instance
//! that looks for unnumbered events itself, every millisecond while events keep
//! coming and backing off to every [`POLL_MAX`] when none do, each look a read of a
//! partial index; when some wait it runs the sequencer (sequencers queue on one row,
//! so several instances doing it is harmless), which NOTIFYs `carewire_seq` (the last
//! `seq`) once per batch. The connection `LISTEN`s on that and publishes the latest
//! `seq` it knows. If the connection is lost it reconnects with backoff and catches
//! up: the table, not the notifications, is the source of truth, so nothing is lost
//! while it was away.
//!
//! The same connection listens on `carewire_consult`, whose payload names the instance
//! that has consultation frames waiting in `consult_relay` (see
//! `consult::relay`); the bus wakes this instance's relay reader.
//!
//! The bus is a trait so that a broker (NATS, Redis) can take PostgreSQL's place when
//! NOTIFY fan-out becomes the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use tokio::sync::watch;

use super::stream;

pub trait Bus: Send + Sync + std::fmt::Debug {
    /// Changes whenever events may have been sequenced; holds the latest `seq` known.
    fn wakeups(&self) -> watch::Receiver<i64>;
    /// Changes whenever consultation frames may be waiting for this instance.
    fn relay_wakeups(&self) -> watch::Receiver<u64>;
}

/// How long the listener sleeps when nothing arrived. libpq hands notifications over
/// only when asked, so the listener asks this often; it costs one non-blocking read.
const POLL: Duration = Duration::from_millis(2);
/// How soon the listener looks for unnumbered events again after numbering some.
const POLL_MIN: Duration = Duration::from_millis(1);
/// How long it waits at most between looks when none came: the most an event waits
/// for its number on an idle stream.
const POLL_MAX: Duration = Duration::from_millis(16);
/// How often the listening connection is checked with a query.
const HEALTH_EVERY: Duration = Duration::from_secs(5);
const BATCH: i32 = 5000;

/// The PostgreSQL LISTEN/NOTIFY bus.
#[derive(Debug)]
pub struct PgBus {
    latest: watch::Sender<i64>,
    relayed: watch::Sender<u64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PgBus {
    /// Starts listening on a dedicated connection to `database_url`, for the events
    /// and for consultation frames addressed to `instance`.
    pub fn start(database_url: String, instance: uuid::Uuid) -> PgBus {
        let (latest, _) = watch::channel(0);
        let (relayed, _) = watch::channel(0);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let wake = Wake {
                latest: latest.clone(),
                relayed: relayed.clone(),
                instance: instance.to_string(),
            };
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("carewire-listener".into())
                .spawn(move || listen(&database_url, &wake, &stop))
                .ok()
        };
        PgBus {
            latest,
            relayed,
            stop,
            thread,
        }
    }

    /// Stops listening (at shutdown).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PgBus {
    /// Tells the listener to stop without waiting for it: a drop may happen on an
    /// async thread (a server task cancelled), which must not block on a thread that
    /// may itself be waiting for the network. [`PgBus::stop`] waits.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Bus for PgBus {
    fn wakeups(&self) -> watch::Receiver<i64> {
        self.latest.subscribe()
    }

    fn relay_wakeups(&self) -> watch::Receiver<u64> {
        self.relayed.subscribe()
    }
}

/// Whom the listener wakes.
struct Wake {
    latest: watch::Sender<i64>,
    relayed: watch::Sender<u64>,
    /// This instance's id, as `carewire_consult` payloads name it.
    instance: String,
}

impl Wake {
    fn relay(&self) {
        self.relayed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn publish(latest: &watch::Sender<i64>, seq: i64) {
    latest.send_if_modified(|known| {
        if seq > *known {
            *known = seq;
            true
        } else {
            false
        }
    });
}

/// Waits before the first reconnect; doubled per failure, up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
/// The longest wait between reconnects: live events resume within this of the
/// database's return. One connection attempt per instance per quarter second is
/// nothing to a database that is up, and a refused attempt costs even less.
const RECONNECT_MAX: Duration = Duration::from_millis(250);
/// While the database stays away, the warning is repeated this often, not per attempt.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Reconnects with backoff until told to stop.
fn listen(url: &str, wake: &Wake, stop: &AtomicBool) {
    let url = crate::db::with_connect_timeout(url, 2);
    let mut backoff = RECONNECT_FIRST;
    let mut warned_at: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        match PgConnection::establish(&url) {
            Ok(mut conn) => {
                backoff = RECONNECT_FIRST;
                if warned_at.take().is_some() {
                    tracing::info!("the event listener is connected again");
                }
                match serve(&mut conn, wake, stop) {
                    Ok(()) => return,
                    Err(e) => {
                        metrics::counter!("bus_reconnects_total").increment(1);
                        tracing::warn!(error = %e, "the event listener lost its connection; reconnecting");
                    }
                }
            }
            Err(e) => {
                if warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(error = %e, retry_every_ms = RECONNECT_MAX.as_millis() as u64, "the event listener cannot connect");
                    warned_at = Some(Instant::now());
                }
            }
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// Sequences everything committed; returns the last `seq`.
fn sequence_all(conn: &mut PgConnection) -> QueryResult<i64> {
    let mut last = stream::sequence(conn, BATCH)?;
    loop {
        let next = stream::sequence(conn, BATCH)?;
        if next == last {
            return Ok(last);
        }
        last = next;
    }
}

/// Listens on one connection until it fails (Err) or we are told to stop (Ok).
fn serve(conn: &mut PgConnection, wake: &Wake, stop: &AtomicBool) -> QueryResult<()> {
    let latest = &wake.latest;
    diesel::sql_query("SET application_name = 'carewire-listener'").execute(conn)?;
    diesel::sql_query("LISTEN carewire_seq").execute(conn)?;
    diesel::sql_query("LISTEN carewire_consult").execute(conn)?;
    // Whatever happened while we were away is in the tables.
    publish(latest, sequence_all(conn)?);
    wake.relay();
    let mut checked_at = Instant::now();
    let (mut look_at, mut interval) = (Instant::now(), POLL_MIN);
    while !stop.load(Ordering::Relaxed) {
        let (mut newest, mut relayed) = (None::<i64>, false);
        for notification in conn.notifications_iter() {
            let notification = notification?;
            match notification.channel.as_str() {
                "carewire_consult" => relayed |= notification.payload == wake.instance,
                "carewire_seq" => {
                    if let Ok(seq) = notification.payload.parse::<i64>() {
                        newest = Some(newest.map_or(seq, |n| n.max(seq)));
                    }
                }
                _ => {}
            }
        }
        if Instant::now() >= look_at {
            let known = *latest.borrow();
            // Events held back by an older open transaction keep `waiting` true
            // without being numbered: that backs off too.
            let progressed = if stream::waiting(conn)? {
                let last = sequence_all(conn)?;
                newest = Some(newest.map_or(last, |n| n.max(last)));
                last > known
            } else {
                false
            };
            interval = if progressed {
                POLL_MIN
            } else {
                (interval * 2).min(POLL_MAX)
            };
            look_at = Instant::now() + interval;
        }
        if checked_at.elapsed() >= HEALTH_EVERY {
            diesel::sql_query("SELECT 1").execute(conn)?;
            checked_at = Instant::now();
        }
        if relayed {
            wake.relay();
        }
        match newest {
            Some(seq) => publish(latest, seq),
            None if !relayed => {
                std::thread::sleep(POLL.min(look_at.saturating_duration_since(Instant::now())));
            }
            None => {}
        }
    }
    Ok(())
}
