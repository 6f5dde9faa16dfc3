//! The sealer: gives committed audit rows their sequence numbers and hashes, and signs
//! checkpoints.
//!
//! Every instance runs one on a dedicated thread and connection, but only the holder
//! of a PostgreSQL advisory lock seals; the others wait to take over if it goes away
//! (the lock dies with its session). Writers never wait for the sealer: they insert
//! unsealed rows freely, and the sealer catches up in batches. Each checkpoint is
//! stored in the database, appended to the external file and written to the log.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use carewire_audit::chain::Head;
use carewire_audit::checkpoint::{Checkpoint, CheckpointSigner, SignedCheckpoint};
use carewire_audit::store;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Bool;

/// Advisory lock held by the sealing leader. ("cw-seal" in ASCII.)
const SEALER_LOCK: i64 = 0x63_77_2d_73_65_61_6c;
/// Rows sealed per transaction.
const BATCH: i64 = 5_000;

/// What the sealer needs.
#[derive(Debug, Clone)]
pub struct SealerConfig {
    pub database_url: String,
    pub checkpoint_file: PathBuf,
    pub seal_interval: Duration,
    pub checkpoint_interval: Duration,
}

/// A running sealer. Stopping it seals what is committed and signs a last checkpoint.
#[derive(Debug)]
pub struct Sealer {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Sealer {
    /// Publishes the signer's public key beside the checkpoint file (so that the log
    /// can be verified without the secret key), then starts sealing.
    pub fn spawn(config: SealerConfig, signer: Arc<CheckpointSigner>) -> std::io::Result<Sealer> {
        let key_file = super::trust::key_file_for(&config.checkpoint_file);
        if let Err(e) = super::trust::publish(&key_file, &signer.verifying_key()) {
            tracing::error!(error = %e, file = %key_file.display(), "cannot publish the audit signing key's public key");
        }
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("audit-sealer".into())
            .spawn(move || run(&config, &signer, &stopped))?;
        Ok(Sealer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops after a final sealing pass and checkpoint; waits for it.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

/// The leader's state between passes.
struct Leadership {
    conn: PgConnection,
    /// The head this sealer left: if the database's differs at the next pass, sealed
    /// rows were changed, and nothing more is sealed or signed.
    head: Head,
    last_checkpoint: u64,
    last_checkpoint_at: Instant,
    /// Set when the head moved: no more sealing or signing in this process.
    halted: bool,
}

fn run(config: &SealerConfig, signer: &CheckpointSigner, stopped: &mpsc::Receiver<()>) {
    let mut leader: Option<Leadership> = None;
    let mut follower: Option<PgConnection> = None;
    let mut retry = Duration::from_millis(200);
    loop {
        let stopping = match stopped.try_recv() {
            Ok(()) | Err(mpsc::TryRecvError::Disconnected) => true,
            Err(mpsc::TryRecvError::Empty) => false,
        };
        if leader.as_ref().is_some_and(|l| l.halted) {
            // Keep the lock (so no other instance seals over the tampered head) and
            // keep saying so until an operator looks.
            tracing::error!(
                "audit sealing is halted because sealed rows changed underneath it; run `carewire audit verify` \
                 and restart once the cause is understood"
            );
            match stopped.recv_timeout(Duration::from_secs(60)) {
                Err(RecvTimeoutError::Timeout) => continue,
                _ => return,
            }
        }
        if leader.is_none() {
            match try_lead(config, &mut follower) {
                Ok(Some(l)) => {
                    tracing::info!(
                        last_checkpoint = l.last_checkpoint,
                        "this instance now seals the audit log"
                    );
                    leader = Some(l);
                    retry = Duration::from_millis(200);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the audit sealer cannot reach the database");
                    follower = None;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
            }
        }
        if stopping {
            if let Some(l) = leader.as_mut() {
                finish(l, config, signer);
            }
            return;
        }
        let mut full_batch = false;
        if let Some(l) = leader.as_mut() {
            match pass(l, config, signer, false) {
                Ok(full) => full_batch = full,
                Err(e) => {
                    tracing::error!(error = %e, "audit sealing failed; retrying with a new connection");
                    leader = None; // dropping the connection releases the lock
                }
            }
        }
        let wait = if full_batch {
            Duration::ZERO
        } else if leader.is_some() {
            config.seal_interval
        } else {
            retry.max(Duration::from_secs(1))
        };
        match stopped.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(l) = leader.as_mut() {
                    finish(l, config, signer);
                }
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// How long a stopping sealer waits for transactions still open in this database
/// before it gives up on sealing the events committed after them.
const FINISH_WAIT: Duration = Duration::from_secs(3);

/// The last passes before stopping: seal everything committed and sign a last
/// checkpoint; what cannot be sealed in time (because older transactions here are
/// still open) is said loudly, with the sessions that hold it back. Those events are
/// kept, and the next sealer to run seals them.
fn finish(l: &mut Leadership, config: &SealerConfig, signer: &CheckpointSigner) {
    let deadline = Instant::now() + FINISH_WAIT;
    loop {
        match pass(l, config, signer, true) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "the final audit sealing pass failed; committed events may be left unsealed");
                return;
            }
        }
        if l.halted {
            return;
        }
        let left = match store::unsealed_count(&mut l.conn) {
            Ok(left) => left,
            Err(e) => {
                tracing::error!(error = %e, "cannot tell whether every committed audit event was sealed");
                return;
            }
        };
        if left == 0 {
            return;
        }
        if Instant::now() >= deadline {
            let sessions = store::holding_back(&mut l.conn).unwrap_or_default();
            tracing::error!(
                unsealed = left,
                holding_back = ?sessions,
                "STOPPING WITH {left} COMMITTED AUDIT EVENTS UNSEALED: transactions that started before them are \
                 still open in this database, and sealing past them could put an earlier event after a later one. \
                 The events are kept and the next sealer to run seals them; until then `carewire audit verify` \
                 does not cover them"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Takes the lock if free. Keeps a connection while following so the next attempt is
/// cheap.
fn try_lead(
    config: &SealerConfig,
    follower: &mut Option<PgConnection>,
) -> anyhow::Result<Option<Leadership>> {
    let mut conn = match follower.take() {
        Some(conn) => conn,
        None => PgConnection::establish(&crate::db::with_connect_timeout(&config.database_url, 10))?,
    };
    let locked = diesel::select(diesel::dsl::sql::<Bool>(&format!(
        "pg_try_advisory_lock({SEALER_LOCK})"
    )))
    .get_result::<bool>(&mut conn)?;
    if !locked {
        *follower = Some(conn);
        return Ok(None);
    }
    let last_checkpoint = store::latest_checkpoint(&mut conn)?.unwrap_or(0);
    let head = store::head(&mut conn)?;
    Ok(Some(Leadership {
        conn,
        head,
        last_checkpoint,
        last_checkpoint_at: Instant::now(),
        halted: false,
    }))
}

/// Seals one batch, and checkpoints when due. Returns whether the batch was full
/// (more is waiting).
fn pass(
    l: &mut Leadership,
    config: &SealerConfig,
    signer: &CheckpointSigner,
    force_checkpoint: bool,
) -> anyhow::Result<bool> {
    let sealed = match store::seal_batch(&mut l.conn, BATCH, Some(l.head)) {
        Ok(sealed) => sealed,
        Err(e @ store::StoreError::HeadMoved { .. }) => {
            metrics::counter!("audit_tamper_detected_total").increment(1);
            tracing::error!(error = %e, "AUDIT LOG TAMPERING SUSPECTED: sealing stops; run `carewire audit verify`");
            l.halted = true;
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    l.head = sealed.head;
    if sealed.count > 0 {
        metrics::counter!("audit_events_sealed_total").increment(sealed.count as u64);
        if let Some(lag) = sealed.oldest_lag {
            metrics::histogram!("audit_seal_lag_seconds")
                .record(lag.num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
    }
    let due = force_checkpoint || l.last_checkpoint_at.elapsed() >= config.checkpoint_interval;
    if due && sealed.head.size > l.last_checkpoint {
        checkpoint(l, config, signer, sealed.head)?;
    }
    Ok(sealed.count as i64 == BATCH)
}

fn checkpoint(
    l: &mut Leadership,
    config: &SealerConfig,
    signer: &CheckpointSigner,
    head: Head,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let at = chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let signed = signer.sign(Checkpoint {
        size: head.size,
        head: head.hash,
        at,
    });
    store::store_checkpoint(&mut l.conn, &signed)?;
    if let Err(e) = append(&config.checkpoint_file, &signed) {
        // The database and the log still hold it; say loudly that the file does not.
        tracing::error!(error = %e, file = %config.checkpoint_file.display(), "cannot append the audit checkpoint to its file");
    }
    tracing::info!(
        size = head.size,
        head = %hex::encode(head.hash),
        key_id = %signed.key_id,
        checkpoint = %signed.to_json_line(),
        "audit checkpoint"
    );
    metrics::counter!("audit_checkpoints_total").increment(1);
    l.last_checkpoint = head.size;
    l.last_checkpoint_at = Instant::now();
    Ok(())
}

/// Appends one line to the external checkpoint file and syncs it to disk.
pub fn append(path: &std::path::Path, signed: &SignedCheckpoint) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{}", signed.to_json_line())?;
    file.sync_data()
}
