//! Verification: recompute the chain, hold it against every signed checkpoint, and
//! name the first thing that is wrong.
//!
//! Each stored entry keeps its previous hash beside its own, so a broken link can be
//! told apart from a changed entry. At the first failure the verifier looks at the
//! entry, the one after it, and where the entry's predecessor hash is found, and says:
//!
//! - **edited**: the entry's content no longer matches its hash;
//! - **deleted**: a sequence number is missing, or the entry's predecessor is gone
//!   and later entries were renumbered to close the gap;
//! - **inserted**: a sequence number repeats, or the next entry really follows the
//!   previous one (something was put between them), or an entry's predecessor is
//!   found earlier and the entry is right at the place just after it (what lies
//!   between, with hashes of its own that check out, was put there);
//! - **reordered**: the entry's predecessor sits later in the log;
//! - **truncated**: a checkpoint in the database covers more entries than remain;
//! - **rolled back**: a checkpoint kept outside the database covers more than the
//!   database holds, or disagrees with it (the database was restored from an older
//!   state, or rewritten); named just after the last checkpoint that still matches
//!   and was signed before the one contradicted, since a restored log may have grown
//!   again, and been checkpointed again, past the point it was restored to;
//! - **rewritten**: the chain is self-consistent but differs from a signed checkpoint
//!   the database itself holds (someone recomputed the hashes);
//! - **forged checkpoint**: a checkpoint's signature fails or names an unknown key.
//!
//! Entries sealed after the last checkpoint are covered only by the chain: an
//! attacker who rewrites them and recomputes their hashes is caught by the next
//! checkpoint, not before (see the README's honest limits).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;

use crate::chain::{GENESIS, Hash, Head, entry_hash};
use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::encoding::{SealedEvent, encode};

/// An entry as stored: the sealed event and its two hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub sealed: SealedEvent,
    pub prev_hash: Hash,
    pub hash: Hash,
}

/// Where a checkpoint was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Database,
    External,
}

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    Edited,
    Deleted,
    Inserted,
    Reordered,
    Truncated,
    RolledBack,
    Rewritten,
    ForgedCheckpoint,
}

impl Tamper {
    pub fn as_str(self) -> &'static str {
        match self {
            Tamper::Edited => "edited",
            Tamper::Deleted => "deleted",
            Tamper::Inserted => "inserted",
            Tamper::Reordered => "reordered",
            Tamper::Truncated => "truncated",
            Tamper::RolledBack => "rolled back",
            Tamper::Rewritten => "rewritten",
            Tamper::ForgedCheckpoint => "forged checkpoint",
        }
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log {} at sequence number {seq}: {detail}", tamper.as_str())]
pub struct Finding {
    pub seq: u64,
    pub tamper: Tamper,
    pub detail: String,
}

/// An intact log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Entries checked (after the trusted start, if any).
    pub entries: u64,
    /// Checkpoints whose head matched the chain.
    pub checkpoints_matched: usize,
    pub head: Head,
}

/// An entry with whether its stored hash is right for its content: the costly part of
/// verifying (encoding and hashing), which needs nothing but the entry and so can be
/// done for many entries at once, by several readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub entry: Entry,
    pub self_ok: bool,
}

impl Checked {
    pub fn new(entry: Entry) -> Checked {
        let self_ok = entry_hash(&entry.prev_hash, &encode(&entry.sealed)) == entry.hash;
        Checked { entry, self_ok }
    }
}

/// Verification failed: the log was tampered with, or reading it failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError<E> {
    #[error(transparent)]
    Tampered(Finding),
    #[error("reading the log failed: {0}")]
    Source(E),
}

/// Checkpoints from every source, merged.
#[derive(Debug, Default, Clone)]
pub struct CheckpointSet {
    by_size: BTreeMap<u64, Vec<(SignedCheckpoint, Vec<Origin>)>>,
}

impl CheckpointSet {
    pub fn new(checkpoints: impl IntoIterator<Item = (SignedCheckpoint, Origin)>) -> CheckpointSet {
        let mut set = CheckpointSet::default();
        for (checkpoint, origin) in checkpoints {
            set.add(checkpoint, origin);
        }
        set
    }

    pub fn add(&mut self, checkpoint: SignedCheckpoint, origin: Origin) {
        let at_size = self.by_size.entry(checkpoint.checkpoint.size).or_default();
        match at_size.iter_mut().find(|(known, _)| *known == checkpoint) {
            Some((_, origins)) if origins.contains(&origin) => {}
            Some((_, origins)) => origins.push(origin),
            None => at_size.push((checkpoint, vec![origin])),
        }
    }

    pub fn len(&self) -> usize {
        self.by_size.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_size.is_empty()
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> Option<&SignedCheckpoint> {
        self.by_size
            .values()
            .next_back()
            .and_then(|v| v.first())
            .map(|(c, _)| c)
    }
}

fn hex8(hash: &Hash) -> String {
    hex::encode(&hash[..8])
}

/// Whether `entry`'s stored hash is right for its content placed at `seq`.
fn consistent_at(entry: &Entry, seq: u64) -> bool {
    let mut sealed = entry.sealed.clone();
    sealed.seq = seq;
    entry_hash(&entry.prev_hash, &encode(&sealed)) == entry.hash
}

/// How far back a renumbered deletion is recognised: an entry whose predecessor is
/// gone is tried at this many later positions.
const MAX_RENUMBERED_GAP: u64 = 64;

/// Names what is wrong at `entry` (number `seq`), whose link to `prev` or own hash
/// fails. `located` is where the entry's stored predecessor hash is found in the log,
/// `next` the entry after it. Returns the first bad sequence number, the kind, and
/// the reason.
fn explain(
    entry: &Entry,
    seq: u64,
    prev: Hash,
    link_ok: bool,
    self_ok: bool,
    located: Option<u64>,
    next: Option<&Entry>,
) -> (u64, Tamper, String) {
    if let Some(at) = located.filter(|at| *at >= seq) {
        return (
            seq,
            Tamper::Reordered,
            format!("its predecessor (hash {}…) is entry {at}", hex8(&entry.prev_hash)),
        );
    }
    if let Some(at) = located.filter(|at| *at + 1 < seq)
        && consistent_at(entry, at + 1)
    {
        // The entry was sealed right after entry `at`; everything now between them
        // checked out on its own, so it was made to look sealed.
        return (
            at + 1,
            Tamper::Inserted,
            if at + 2 == seq {
                format!(
                    "entry {} was put between entry {at} and the entry that followed it (now numbered {seq})",
                    at + 1
                )
            } else {
                format!(
                    "entries {} to {} were put between entry {at} and the entry that followed it (now numbered {seq})",
                    at + 1,
                    seq - 1
                )
            },
        );
    }
    if next.is_some_and(|n| n.prev_hash == prev && consistent_at(n, seq)) {
        return (
            seq,
            Tamper::Inserted,
            "the next entry follows the previous one directly".to_owned(),
        );
    }
    if !link_ok && located.is_none() {
        if let Some(gap) = (1..=MAX_RENUMBERED_GAP).find(|gap| consistent_at(entry, seq + gap)) {
            return (
                seq,
                Tamper::Deleted,
                format!("{gap} entries before this one are gone and later entries were renumbered"),
            );
        }
        if self_ok {
            return (
                seq,
                Tamper::Deleted,
                format!(
                    "its predecessor (hash {}…) is not in the log",
                    hex8(&entry.prev_hash)
                ),
            );
        }
    }
    (
        seq,
        Tamper::Edited,
        "the content does not match its hash".to_owned(),
    )
}

/// Verifies `entries` (in sequence order, starting after `start`) against the
/// checkpoints. `locate` finds the sequence number of the entry with a given stored
/// hash (used only to explain a failure); `progress` is told each sequence number.
pub fn verify<I, E>(
    entries: I,
    checkpoints: &CheckpointSet,
    trusted_keys: &[VerifyingKey],
    start: Option<Checkpoint>,
    locate: impl FnMut(&Hash) -> Result<Option<u64>, E>,
    progress: impl FnMut(u64),
) -> Result<Summary, VerifyError<E>>
where
    I: IntoIterator<Item = Result<Entry, E>>,
{
    verify_checked(
        entries.into_iter().map(|entry| entry.map(Checked::new)),
        checkpoints,
        trusted_keys,
        start,
        locate,
        progress,
    )
}

/// [`verify`] over entries whose own hashes were already checked ([`Checked`]): the
/// links, the order and the checkpoints, in one pass.
pub fn verify_checked<I, E>(
    entries: I,
    checkpoints: &CheckpointSet,
    trusted_keys: &[VerifyingKey],
    start: Option<Checkpoint>,
    mut locate: impl FnMut(&Hash) -> Result<Option<u64>, E>,
    mut progress: impl FnMut(u64),
) -> Result<Summary, VerifyError<E>>
where
    I: IntoIterator<Item = Result<Checked, E>>,
{
    let tampered = |seq, tamper, detail: String| VerifyError::Tampered(Finding { seq, tamper, detail });

    for at_size in checkpoints.by_size.values() {
        for (checkpoint, _) in at_size {
            if let Err(e) = checkpoint.verify(trusted_keys) {
                return Err(tampered(
                    checkpoint.checkpoint.size,
                    Tamper::ForgedCheckpoint,
                    format!("checkpoint at size {}: {e}", checkpoint.checkpoint.size),
                ));
            }
        }
    }

    let start = start
        .map(|c| Head {
            size: c.size,
            hash: c.head,
        })
        .unwrap_or(Head::EMPTY);
    let mut prev = start.hash;
    let mut expected = start.size + 1;
    // Checkpoints the chain matched: (size, signed at).
    let mut matched: Vec<(u64, DateTime<Utc>)> = Vec::new();
    // The last entry known good when checkpoints signed up to `signed_by` contradict
    // the log: the largest matching checkpoint signed no later than that. A log put
    // back to an earlier state and sealed again gets new checkpoints that match it;
    // they prove only that it is self-consistent, not that it is the log that was.
    let trusted_before = |matched: &[(u64, DateTime<Utc>)], signed_by: DateTime<Utc>| {
        matched
            .iter()
            .filter(|(_, at)| *at <= signed_by)
            .map(|(size, _)| *size)
            .max()
            .unwrap_or(start.size)
    };
    let mut entries = entries.into_iter().peekable();

    while let Some(checked) = entries.next() {
        let Checked { entry, self_ok } = checked.map_err(VerifyError::Source)?;
        let seq = entry.sealed.seq;
        if seq > expected {
            return Err(tampered(
                expected,
                Tamper::Deleted,
                format!("sequence numbers jump from {} to {seq}", expected - 1),
            ));
        }
        if seq < expected {
            return Err(tampered(
                seq,
                Tamper::Inserted,
                format!("sequence number {seq} appears twice"),
            ));
        }
        let link_ok = entry.prev_hash == prev;
        if !(link_ok && self_ok) {
            let next = match entries.peek() {
                Some(Ok(next)) => Some(next.entry.clone()),
                _ => None,
            };
            let located = if link_ok {
                None
            } else {
                locate(&entry.prev_hash).map_err(VerifyError::Source)?
            };
            let (at, tamper, detail) = explain(&entry, seq, prev, link_ok, self_ok, located, next.as_ref());
            return Err(tampered(at, tamper, detail));
        }
        if let Some(at_size) = checkpoints.by_size.get(&seq) {
            for (checkpoint, origins) in at_size {
                if checkpoint.checkpoint.head == entry.hash {
                    matched.push((seq, checkpoint.checkpoint.at));
                } else {
                    let tamper = if origins.contains(&Origin::Database) {
                        Tamper::Rewritten
                    } else {
                        Tamper::RolledBack
                    };
                    let last_matched = trusted_before(&matched, checkpoint.checkpoint.at);
                    return Err(tampered(
                        last_matched + 1,
                        tamper,
                        format!(
                            "the chain differs from the signed checkpoint at size {seq} somewhere after entry {last_matched}"
                        ),
                    ));
                }
            }
        }

        progress(seq);
        prev = entry.hash;
        expected = seq + 1;
    }

    let end = expected - 1;
    if let Some((&size, at_size)) = checkpoints.by_size.range(end + 1..).next() {
        let in_database = at_size
            .iter()
            .any(|(_, origins)| origins.contains(&Origin::Database));
        let earliest_beyond = checkpoints
            .by_size
            .range(end + 1..)
            .flat_map(|(_, at_size)| at_size.iter().map(|(c, _)| c.checkpoint.at))
            .min()
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let last_matched = trusted_before(&matched, earliest_beyond);
        // The database still holds a checkpoint beyond its end: rows were cut off the
        // end, and the first missing one is the first bad entry. Only the outside copy
        // knows it: the database was put back to an earlier state and may have grown
        // again since, so nothing after the last checkpoint that still matches can be
        // trusted.
        return Err(if in_database {
            tampered(
                end + 1,
                Tamper::Truncated,
                format!(
                    "a signed checkpoint in the database covers {size} entries but the log ends at {end}"
                ),
            )
        } else {
            tampered(
                last_matched + 1,
                Tamper::RolledBack,
                format!(
                    "a signed checkpoint kept outside the database covers {size} entries but the log ends at {end}; \
                     entries after {last_matched}, the last checkpoint that still matches, are not the ones it signed"
                ),
            )
        });
    }
    Ok(Summary {
        entries: end - start.size,
        checkpoints_matched: matched.len(),
        head: Head {
            size: end,
            hash: if end == 0 { GENESIS } else { prev },
        },
    })
}
