//! Verifying the audit log in the database against its checkpoints (those in the
//! database and those kept outside it), for `carewire audit verify` and the tests.

use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

use carewire_audit::checkpoint::SignedCheckpoint;
use carewire_audit::store::{self, StoreError};
use carewire_audit::verify::{
    Checked, CheckpointSet, Finding, Origin, Summary, Tamper, VerifyError, verify_checked,
};
use diesel::pg::PgConnection;
use diesel::{Connection, RunQueryDsl};
use ed25519_dalek::VerifyingKey;

/// Entries loaded per query.
const PAGE: i64 = 20_000;
/// The same, for [`Readers::Parallel`].
pub const PAGE_ENTRIES: u64 = PAGE as u64;

/// Where verification reads the log.
#[derive(Debug, Clone, Copy)]
pub enum Readers<'a> {
    /// The given connection alone, one page after another.
    One,
    /// `jobs` connections of their own to `url`, each reading every `jobs`-th page and
    /// checking its entries' own hashes (decoding, encoding and hashing: the costly
    /// part), while the caller's thread checks links, order and checkpoints in
    /// sequence as the pages arrive. The pages are sealed, so every reader sees them
    /// as they are, whatever its snapshot.
    /// `page` entries a query ([`PAGE_ENTRIES`] unless testing the paging itself).
    Parallel { url: &'a str, jobs: usize, page: u64 },
}

/// Reader threads run at most this many pages ahead of the sequential pass, each.
const PAGES_AHEAD: usize = 2;

/// The entries of the sealed pages after `after` through `through`, page by page.
fn read_page(
    conn: &mut PgConnection,
    after: u64,
    through: u64,
) -> Result<Vec<Result<Checked, StoreError>>, StoreError> {
    let limit = i64::try_from(through.saturating_sub(after)).unwrap_or(PAGE);
    let rows = store::sealed_page(conn, after, Some(through), limit).map_err(StoreError::Database)?;
    Ok(rows
        .into_iter()
        .map(|stored| stored.entry().map(Checked::new))
        .collect())
}

/// A page's entries one by one, or the error that kept it from being read.
fn flatten(page: Result<Vec<Result<Checked, StoreError>>, StoreError>) -> Vec<Result<Checked, StoreError>> {
    page.unwrap_or_else(|e| vec![Err(e)])
}

/// A connection for one reader, planned as verification wants it.
fn reader_connection(url: &str) -> Result<PgConnection, StoreError> {
    let mut conn = PgConnection::establish(url).map_err(|e| {
        StoreError::Database(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            Box::new(e.to_string()),
        ))
    })?;
    diesel::sql_query("SET max_parallel_workers_per_gather = 0")
        .execute(&mut conn)
        .map_err(StoreError::Database)?;
    Ok(conn)
}

/// An intact log.
#[derive(Debug, Clone)]
pub struct Report {
    pub summary: Summary,
    pub checkpoints: usize,
    pub latest_checkpoint: Option<u64>,
    pub unsealed: i64,
    pub elapsed: Duration,
}

/// Reads the external checkpoint file (JSON lines). A file that is missing or cannot
/// be read is an error: without it a rollback to an earlier checkpoint goes unseen,
/// so only the operator may decide to go on without it.
pub fn read_checkpoint_file(path: &Path) -> anyhow::Result<Vec<SignedCheckpoint>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "there is no external checkpoint file at {}; without it a database restored to an earlier \
                 checkpoint cannot be told apart from an intact one (pass --no-external-checkpoints to verify \
                 against the database's own checkpoints only)",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot read the external checkpoint file {}: {e}", path.display())
        }
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            SignedCheckpoint::from_json_line(line)
                .map_err(|e| anyhow::anyhow!("line {} of {} is not a checkpoint: {e}", n + 1, path.display()))
        })
        .collect()
}

/// Verifies the whole log (or from the checkpoint of size `from`). `progress` gets the
/// last sequence number checked and the total.
pub fn verify_database(
    conn: &mut PgConnection,
    readers: Readers<'_>,
    trusted_keys: &[VerifyingKey],
    external: Vec<SignedCheckpoint>,
    from: Option<u64>,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Result<Report, Finding>> {
    let started = Instant::now();
    // Pages are read in chain order through the primary keys; parallel workers only add
    // a gather step to that plan (measured: 3.1 µs a row with them, 1.9 without).
    diesel::sql_query("SET max_parallel_workers_per_gather = 0").execute(conn)?;
    let mut checkpoints = CheckpointSet::new(
        store::checkpoints(conn)?
            .into_iter()
            .map(|c| (c, Origin::Database)),
    );
    for checkpoint in external {
        checkpoints.add(checkpoint, Origin::External);
    }
    let total = store::last_seq(conn)?;
    let unsealed = store::unsealed_count(conn)?;
    let start = match from {
        None => None,
        Some(size) => {
            let trusted = store::checkpoints(conn)?
                .into_iter()
                .find(|c| c.checkpoint.size == size)
                .ok_or_else(|| anyhow::anyhow!("there is no checkpoint at size {size} to start from"))?;
            trusted
                .verify(trusted_keys)
                .map_err(|e| anyhow::anyhow!("the checkpoint at size {size} cannot be trusted: {e}"))?;
            Some(trusted.checkpoint)
        }
    };

    let conn = RefCell::new(conn);
    let first = start.map(|c| c.size).unwrap_or(0);
    let locate = |hash: &carewire_audit::Hash| {
        store::locate(&mut conn.borrow_mut(), hash).map_err(StoreError::Database)
    };
    // Page p covers (first + p·size, first + (p+1)·size]; pages are read on their own
    // connections when there are readers and pages enough (a short log opens one
    // connection, not one per CPU), else on the caller's, in order.
    let (size, jobs, url) = match readers {
        Readers::Parallel { url, jobs, page } => (page.max(1), jobs, Some(url)),
        Readers::One => (PAGE_ENTRIES, 1, None),
    };
    let pages = total.saturating_sub(first).div_ceil(size);
    let bounds = |p: u64| (first + p * size, (first + (p + 1) * size).min(total));
    let jobs = jobs.min(usize::try_from(pages).unwrap_or(usize::MAX));
    let result = match url {
        Some(url) if jobs > 1 => std::thread::scope(|scope| {
            // Reader w reads pages w, w + jobs, …; the pass takes them back in order.
            let receivers: Vec<_> = (0..jobs as u64)
                .map(|w| {
                    let (tx, rx) = std::sync::mpsc::sync_channel(PAGES_AHEAD);
                    scope.spawn(move || {
                        let mut conn = match reader_connection(url) {
                            Ok(conn) => conn,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        };
                        for p in (w..pages).step_by(jobs) {
                            let (after, through) = bounds(p);
                            // The pass stopped (a finding): nothing more to read.
                            if tx.send(read_page(&mut conn, after, through)).is_err() {
                                return;
                            }
                        }
                    });
                    rx
                })
                .collect();
            let entries = (0..pages).flat_map(|p| {
                let page = match receivers[(p % jobs as u64) as usize].recv() {
                    Ok(page) => page,
                    // Only a reader that panicked hangs up early (the scope then
                    // panics too, once verification stops).
                    Err(_) => Err(StoreError::Database(
                        diesel::result::Error::BrokenTransactionManager,
                    )),
                };
                flatten(page)
            });
            let result = verify_checked(entries, &checkpoints, trusted_keys, start, locate, |seq| {
                progress(seq, total)
            });
            drop(receivers);
            result
        }),
        _ => {
            let entries = (0..pages).flat_map(|p| {
                let (after, through) = bounds(p);
                flatten(read_page(&mut conn.borrow_mut(), after, through))
            });
            verify_checked(entries, &checkpoints, trusted_keys, start, locate, |seq| {
                progress(seq, total)
            })
        }
    };
    match result {
        Ok(summary) => Ok(Ok(Report {
            summary,
            checkpoints: checkpoints.len(),
            latest_checkpoint: checkpoints.latest().map(|c| c.checkpoint.size),
            unsealed,
            elapsed: started.elapsed(),
        })),
        Err(VerifyError::Tampered(finding)) => Ok(Err(finding)),
        // What the sealer could not have written was written by someone else.
        Err(VerifyError::Source(StoreError::Undecodable { seq, what, .. })) => Ok(Err(Finding {
            seq: seq.unwrap_or(0),
            tamper: Tamper::Edited,
            detail: format!("the stored row cannot be read back: {what}"),
        })),
        Err(VerifyError::Source(StoreError::EventMissing { seq })) => Ok(Err(Finding {
            seq: u64::try_from(seq).unwrap_or(0),
            tamper: Tamper::Deleted,
            detail: "the event is gone; its chain entry remains".to_owned(),
        })),
        Err(VerifyError::Source(e)) => Err(e.into()),
    }
}
