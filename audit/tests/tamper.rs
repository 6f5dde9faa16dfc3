//! The chain and the verifier, without a database: every kind of tampering is
//! detected and named at the right sequence number; random logs with random single
//! changes never verify.

#![allow(clippy::unwrap_used, reason = "tests unwrap: a panic is a failed assertion")]

use std::collections::HashMap;

use carewire_audit::chain::{Hash, Head};
use carewire_audit::checkpoint::{Checkpoint, CheckpointSigner};
use carewire_audit::encoding::SealedEvent;
use carewire_audit::event::{Actor, AuditEvent, Code, DetailValue, action, purpose, resource};
use carewire_audit::verify::{CheckpointSet, Entry, Origin, Tamper, VerifyError, verify};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use uuid::Uuid;

fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed(&[9; 32])
}

fn event(i: u64) -> AuditEvent {
    AuditEvent::new(
        Actor::User {
            id: Uuid::from_u128(u128::from(i % 5) + 1),
            role: Code::new("provider"),
        },
        if i.is_multiple_of(3) {
            action::READ
        } else {
            action::UPDATE
        },
        resource::PATIENT,
        purpose::TREATMENT,
    )
    .patient(Uuid::from_u128(u128::from(i % 7) + 100))
    .detail(Code::new("n"), DetailValue::Count(i as i64))
}

fn at(i: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_764_000_000_000_000 + i as i64 * 1_000).unwrap()
}

/// A log of `n` entries, as the sealer would write it.
fn log_of(events: Vec<AuditEvent>) -> Vec<Entry> {
    let mut head = Head::EMPTY;
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let sealed = SealedEvent {
                seq: i as u64 + 1,
                recorded_at: at(i as u64),
                event,
            };
            let (prev_hash, hash) = head.append(&sealed);
            Entry {
                sealed,
                prev_hash,
                hash,
            }
        })
        .collect()
}

fn log(n: u64) -> Vec<Entry> {
    log_of((1..=n).map(event).collect())
}

fn checkpoint_at(log: &[Entry], size: u64) -> carewire_audit::SignedCheckpoint {
    signer().sign(Checkpoint {
        size,
        head: log[size as usize - 1].hash,
        at: at(size),
    })
}

fn check(entries: &[Entry], checkpoints: &CheckpointSet) -> Result<carewire_audit::Summary, VerifyError<()>> {
    let by_hash: HashMap<Hash, u64> = entries.iter().map(|e| (e.hash, e.sealed.seq)).collect();
    verify(
        entries.iter().cloned().map(Ok),
        checkpoints,
        &[signer().verifying_key()],
        None,
        |hash| Ok(by_hash.get(hash).copied()),
        |_| {},
    )
}

fn finding(entries: &[Entry], checkpoints: &CheckpointSet) -> (u64, Tamper) {
    match check(entries, checkpoints) {
        Err(VerifyError::Tampered(f)) => (f.seq, f.tamper),
        other => panic!("expected a finding, got {other:?}"),
    }
}

/// Renumbers entries to 1..n in their current order (what an attacker does to hide a
/// gap or make room).
fn renumber(entries: &mut [Entry]) {
    for (i, e) in entries.iter_mut().enumerate() {
        e.sealed.seq = i as u64 + 1;
    }
}

#[test]
fn an_untouched_log_verifies_with_its_checkpoints() {
    let log = log(50);
    let checkpoints = CheckpointSet::new([
        (checkpoint_at(&log, 20), Origin::Database),
        (checkpoint_at(&log, 50), Origin::External),
    ]);
    let summary = check(&log, &checkpoints).unwrap();
    assert_eq!(summary.entries, 50);
    assert_eq!(summary.checkpoints_matched, 2);
    assert_eq!(summary.head.hash, log[49].hash);
}

#[test]
fn an_edited_entry_is_named() {
    let mut log = log(20);
    log[6].sealed.event.patient_id = Some(Uuid::from_u128(999));
    assert_eq!(finding(&log, &CheckpointSet::default()), (7, Tamper::Edited));
}

#[test]
fn a_deleted_entry_is_named_whether_or_not_the_gap_was_closed() {
    let mut gap = log(20);
    gap.remove(6);
    assert_eq!(finding(&gap, &CheckpointSet::default()), (7, Tamper::Deleted));
    renumber(&mut gap);
    assert_eq!(finding(&gap, &CheckpointSet::default()), (7, Tamper::Deleted));
}

#[test]
fn an_inserted_entry_is_named() {
    let mut log = log(20);
    let mut fake = log[6].clone();
    fake.sealed.event.actor = Actor::Anonymous;
    log.insert(6, fake);
    renumber(&mut log);
    assert_eq!(finding(&log, &CheckpointSet::default()), (7, Tamper::Inserted));
}

#[test]
fn a_repeated_sequence_number_is_an_insertion() {
    let mut log = log(20);
    let copy = log[6].clone();
    log.insert(7, copy);
    assert_eq!(finding(&log, &CheckpointSet::default()), (7, Tamper::Inserted));
}

#[test]
fn reordered_entries_are_named() {
    let mut log = log(20);
    log.swap(6, 7);
    renumber(&mut log);
    assert_eq!(finding(&log, &CheckpointSet::default()), (7, Tamper::Reordered));
}

#[test]
fn a_cut_tail_is_truncation_when_the_database_checkpoint_covers_it() {
    let full = log(30);
    let checkpoints = CheckpointSet::new([(checkpoint_at(&full, 30), Origin::Database)]);
    assert_eq!(finding(&full[..25], &checkpoints), (26, Tamper::Truncated));
}

#[test]
fn a_restored_backup_is_a_rollback_caught_by_the_external_checkpoint() {
    let full = log(30);
    let external = CheckpointSet::new([(checkpoint_at(&full, 30), Origin::External)]);
    // No checkpoint before it still matches, so nothing is vouched for from entry 1 on.
    assert_eq!(finding(&full[..25], &external), (1, Tamper::RolledBack));
    // A rolled-back database that then grew again diverges from the checkpoint.
    let mut diverged = full[..25].to_vec();
    let more = log_of((1..=30).map(|i| event(i + 1000)).collect());
    let mut head = Head {
        size: 25,
        hash: diverged[24].hash,
    };
    for (i, e) in more.into_iter().take(5).enumerate() {
        let sealed = SealedEvent {
            seq: 26 + i as u64,
            ..e.sealed
        };
        let (prev_hash, hash) = head.append(&sealed);
        diverged.push(Entry {
            sealed,
            prev_hash,
            hash,
        });
    }
    assert_eq!(finding(&diverged, &external).1, Tamper::RolledBack);
}

#[test]
fn a_recomputed_chain_is_caught_by_a_signed_checkpoint() {
    let original = log(30);
    let mut events: Vec<AuditEvent> = original.iter().map(|e| e.sealed.event.clone()).collect();
    events[9].patient_id = Some(Uuid::from_u128(4242));
    let rewritten = log_of(events);
    let checkpoints = CheckpointSet::new([
        (checkpoint_at(&original, 5), Origin::Database),
        (checkpoint_at(&original, 30), Origin::Database),
    ]);
    // Self-consistent, so only the checkpoint tells; the bad entry is after entry 5.
    assert_eq!(finding(&rewritten, &checkpoints), (6, Tamper::Rewritten));
}

#[test]
fn a_forged_checkpoint_is_refused() {
    let log = log(10);
    let mut forged = checkpoint_at(&log, 10);
    forged.checkpoint.size = 11;
    assert_eq!(
        finding(&log, &CheckpointSet::new([(forged, Origin::External)])),
        (11, Tamper::ForgedCheckpoint)
    );
    let stranger = CheckpointSigner::from_seed(&[1; 32]).sign(Checkpoint {
        size: 10,
        head: log[9].hash,
        at: at(10),
    });
    assert_eq!(
        finding(&log, &CheckpointSet::new([(stranger, Origin::Database)])).1,
        Tamper::ForgedCheckpoint
    );
}

#[test]
fn verification_can_start_from_a_trusted_checkpoint() {
    let log = log(40);
    let start = checkpoint_at(&log, 30).checkpoint;
    let summary = verify::<_, ()>(
        log[30..].iter().cloned().map(Ok),
        &CheckpointSet::default(),
        &[signer().verifying_key()],
        Some(start),
        |_| Ok(None),
        |_| {},
    )
    .unwrap();
    assert_eq!(summary.entries, 10);
    assert_eq!(summary.head.size, 40);
}

// ---- every tamper class, named at its exact entry ---------------------------------

/// Recomputes every hash from entry `from` (1-based) on, as an attacker who wants the
/// chain to look whole would.
fn rechain(entries: &mut [Entry], from: u64) {
    let i = from as usize - 1;
    let mut head = Head {
        size: from - 1,
        hash: if i == 0 { [0; 32] } else { entries[i - 1].hash },
    };
    for e in &mut entries[i..] {
        let (prev_hash, hash) = head.append(&e.sealed);
        e.prev_hash = prev_hash;
        e.hash = hash;
    }
}

/// A forged event placed at entry 7 of a 20-entry log, the genuine 7..20 moved up.
fn with_forged_seventh(own_hash: bool) -> Vec<Entry> {
    let mut log = log(20);
    let mut fake = log[6].clone();
    fake.sealed.event.actor = Actor::Anonymous;
    fake.sealed.event.action = action::DELETE;
    log.insert(6, fake);
    renumber(&mut log);
    if own_hash {
        // Its link and its own hash check out; what follows is left as it was.
        let mut head = Head {
            size: 6,
            hash: log[5].hash,
        };
        let (prev_hash, hash) = head.append(&log[6].sealed);
        log[6].prev_hash = prev_hash;
        log[6].hash = hash;
    }
    log
}

#[test]
fn an_edit_of_any_field_is_named_at_its_entry() {
    type Edit = fn(&mut Entry);
    let edits: [(&str, Edit); 16] = [
        ("recorded_at", |e| {
            e.sealed.recorded_at += chrono::Duration::seconds(1)
        }),
        ("actor", |e| e.sealed.event.actor = Actor::Anonymous),
        ("actor role", |e| {
            if let Actor::User { role, .. } = &mut e.sealed.event.actor {
                *role = Code::new("admin");
            }
        }),
        ("action", |e| e.sealed.event.action = action::DELETE),
        ("resource type", |e| {
            e.sealed.event.resource_type = resource::APPOINTMENT
        }),
        ("resource id", |e| {
            e.sealed.event.resource_id = Some(Uuid::from_u128(5))
        }),
        ("patient", |e| e.sealed.event.patient_id = None),
        ("outcome", |e| {
            e.sealed.event.outcome = carewire_audit::Outcome::Failure(Code::new("forbidden"));
        }),
        ("purpose", |e| e.sealed.event.purpose = purpose::EMERGENCY),
        ("request id", |e| e.sealed.event.request_id = Some("r".to_owned())),
        ("client ip", |e| {
            e.sealed.event.client_ip = Some([10, 0, 0, 1].into())
        }),
        ("user agent", |e| {
            e.sealed.event.user_agent = Some("curl".to_owned())
        }),
        ("details", |e| {
            e.sealed
                .event
                .details
                .insert(Code::new("n"), DetailValue::Count(-1));
        }),
        ("an added detail", |e| {
            e.sealed
                .event
                .details
                .insert(Code::new("extra"), DetailValue::Count(1));
        }),
        ("its hash", |e| e.hash[0] ^= 1),
        ("its predecessor hash", |e| e.prev_hash[31] ^= 0x80),
    ];
    for (field, edit) in edits {
        let mut log = log(20);
        edit(&mut log[6]);
        assert_eq!(
            finding(&log, &CheckpointSet::default()),
            (7, Tamper::Edited),
            "{field}"
        );
    }
}

#[test]
fn deletions_are_named_at_the_first_missing_entry() {
    for count in [1, 3] {
        let mut gap = log(20);
        gap.drain(6..6 + count);
        assert_eq!(
            finding(&gap, &CheckpointSet::default()),
            (7, Tamper::Deleted),
            "{count}, gap open"
        );
        renumber(&mut gap);
        assert_eq!(
            finding(&gap, &CheckpointSet::default()),
            (7, Tamper::Deleted),
            "{count}, gap closed"
        );
    }
}

#[test]
fn an_insertion_is_named_at_the_forged_entry_whether_or_not_it_has_a_hash_of_its_own() {
    assert_eq!(
        finding(&with_forged_seventh(false), &CheckpointSet::default()),
        (7, Tamper::Inserted)
    );
    assert_eq!(
        finding(&with_forged_seventh(true), &CheckpointSet::default()),
        (7, Tamper::Inserted)
    );
    // Two forged entries, each with a hash of its own.
    let mut log = log(20);
    for _ in 0..2 {
        let mut fake = log[6].clone();
        fake.sealed.event.action = action::DELETE;
        log.insert(6, fake);
    }
    renumber(&mut log);
    rechain(&mut log[..8], 7);
    assert_eq!(finding(&log, &CheckpointSet::default()), (7, Tamper::Inserted));
}

#[test]
fn an_insertion_with_every_later_hash_recomputed_is_caught_after_the_last_matching_checkpoint() {
    let original = log(20);
    let mut forged = with_forged_seventh(false);
    rechain(&mut forged, 7);
    let checkpoints = CheckpointSet::new([
        (checkpoint_at(&original, 6), Origin::Database),
        (checkpoint_at(&original, 20), Origin::Database),
    ]);
    assert_eq!(finding(&forged, &checkpoints), (7, Tamper::Rewritten));
    let outside = CheckpointSet::new([
        (checkpoint_at(&original, 6), Origin::External),
        (checkpoint_at(&original, 20), Origin::External),
    ]);
    assert_eq!(finding(&forged, &outside), (7, Tamper::RolledBack));
}

#[test]
fn reordering_is_named_where_the_order_breaks_near_or_far() {
    let mut near = log(20);
    near.swap(6, 7);
    renumber(&mut near);
    assert_eq!(finding(&near, &CheckpointSet::default()), (7, Tamper::Reordered));
    let mut far = log(40);
    far.swap(6, 30);
    renumber(&mut far);
    assert_eq!(finding(&far, &CheckpointSet::default()), (7, Tamper::Reordered));
    // One entry moved far back, the others closing up behind it.
    let mut moved = log(40);
    let entry = moved.remove(6);
    moved.insert(30, entry);
    renumber(&mut moved);
    assert_eq!(finding(&moved, &CheckpointSet::default()), (7, Tamper::Reordered));
    let mut moved = log(40);
    let entry = moved.remove(30);
    moved.insert(6, entry);
    renumber(&mut moved);
    assert_eq!(finding(&moved, &CheckpointSet::default()), (7, Tamper::Reordered));
}

/// The log `full[..restored]` grown again with `more` new entries, as after a restore.
fn regrown(full: &[Entry], restored: usize, more: usize) -> Vec<Entry> {
    let mut log = full[..restored].to_vec();
    let mut head = Head {
        size: restored as u64,
        hash: log[restored - 1].hash,
    };
    for i in 0..more {
        let sealed = SealedEvent {
            seq: (restored + i + 1) as u64,
            recorded_at: at(5_000 + i as u64),
            event: event(10_000 + i as u64),
        };
        let (prev_hash, hash) = head.append(&sealed);
        log.push(Entry {
            sealed,
            prev_hash,
            hash,
        });
    }
    log
}

#[test]
fn a_log_rolled_back_and_grown_again_is_named_just_after_the_last_checkpoint_that_still_matches() {
    let full = log(30);
    let outside = || {
        CheckpointSet::new([
            (checkpoint_at(&full, 10), Origin::External),
            (checkpoint_at(&full, 30), Origin::External),
        ])
    };
    // Rolled back to 10, to 13 (between checkpoints), or not at all before growing.
    for (restored_at, grown_to) in [(10, 15), (13, 15), (10, 10), (25, 35)] {
        let log = regrown(&full, restored_at, grown_to - restored_at);
        assert_eq!(
            finding(&log, &outside()),
            (11, Tamper::RolledBack),
            "restored at {restored_at}, grown to {grown_to}"
        );
    }
    // The regrown log was checkpointed again after the restore: that checkpoint
    // matches it, but was signed after the one it contradicts, so it vouches for nothing.
    let log = regrown(&full, 10, 5);
    let mut checkpoints = outside();
    checkpoints.add(
        signer().sign(Checkpoint {
            size: 15,
            head: log[14].hash,
            at: at(40),
        }),
        Origin::Database,
    );
    assert_eq!(finding(&log, &checkpoints), (11, Tamper::RolledBack));
}

#[test]
fn cutting_the_tail_is_named_at_the_first_missing_entry() {
    let full = log(30);
    let checkpoints = CheckpointSet::new([
        (checkpoint_at(&full, 10), Origin::Database),
        (checkpoint_at(&full, 30), Origin::Database),
    ]);
    assert_eq!(finding(&full[..25], &checkpoints), (26, Tamper::Truncated));
}

#[test]
fn a_forged_or_re_signed_checkpoint_is_named_at_its_size() {
    let log = log(20);
    let mut edited = checkpoint_at(&log, 10);
    edited.checkpoint.head = log[11].hash;
    assert_eq!(
        finding(&log, &CheckpointSet::new([(edited, Origin::Database)])),
        (10, Tamper::ForgedCheckpoint)
    );
    // Re-signed by someone else's key over a rewritten chain.
    let mut rewritten = log.clone();
    rewritten[4].sealed.event.action = action::DELETE;
    rechain(&mut rewritten, 5);
    let resigned = CheckpointSigner::from_seed(&[3; 32]).sign(Checkpoint {
        size: 20,
        head: rewritten[19].hash,
        at: at(20),
    });
    assert_eq!(
        finding(&rewritten, &CheckpointSet::new([(resigned, Origin::Database)])),
        (20, Tamper::ForgedCheckpoint)
    );
}

// ---- properties -------------------------------------------------------------------

fn arb_event() -> impl Strategy<Value = AuditEvent> {
    (
        any::<u128>(),
        prop_oneof![Just(action::READ), Just(action::UPDATE), Just(action::LOGIN)],
        proptest::option::of(any::<u128>()),
        proptest::option::of("[ -~]{0,40}"),
        any::<i64>(),
    )
        .prop_map(|(actor, action, patient, agent, count)| {
            let mut event = AuditEvent::new(
                Actor::User {
                    id: Uuid::from_u128(actor),
                    role: Code::new("admin"),
                },
                action,
                resource::ACCOUNT,
                purpose::OPERATIONS,
            )
            .detail(Code::new("count"), DetailValue::Count(count));
            event.patient_id = patient.map(Uuid::from_u128);
            event.user_agent = agent;
            event
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipHashBit { entry: usize, byte: usize, bit: u8 },
    FlipPrevHashBit { entry: usize, byte: usize, bit: u8 },
    ShiftTime { entry: usize },
    ChangeCount { entry: usize },
    ChangeAgentByte { entry: usize },
    Delete { entry: usize, close_gap: bool },
    Insert { entry: usize },
    Swap { entry: usize },
    Truncate { keep: usize },
}

fn arb_mutation(len: usize) -> impl Strategy<Value = Mutation> {
    let entry = 0..len;
    prop_oneof![
        (entry.clone(), 0..32usize, 0..8u8).prop_map(|(entry, byte, bit)| Mutation::FlipHashBit {
            entry,
            byte,
            bit
        }),
        (entry.clone(), 0..32usize, 0..8u8).prop_map(|(entry, byte, bit)| Mutation::FlipPrevHashBit {
            entry,
            byte,
            bit
        }),
        entry.clone().prop_map(|entry| Mutation::ShiftTime { entry }),
        entry.clone().prop_map(|entry| Mutation::ChangeCount { entry }),
        entry
            .clone()
            .prop_map(|entry| Mutation::ChangeAgentByte { entry }),
        (entry.clone(), any::<bool>()).prop_map(|(entry, close_gap)| Mutation::Delete { entry, close_gap }),
        entry.clone().prop_map(|entry| Mutation::Insert { entry }),
        (0..len.saturating_sub(1).max(1)).prop_map(|entry| Mutation::Swap { entry }),
        (0..len).prop_map(|keep| Mutation::Truncate { keep }),
    ]
}

/// Applies `m`; returns false when it changed nothing (nothing to detect).
fn apply(log: &mut Vec<Entry>, m: &Mutation) -> bool {
    match *m {
        Mutation::FlipHashBit { entry, byte, bit } => log[entry].hash[byte] ^= 1 << bit,
        Mutation::FlipPrevHashBit { entry, byte, bit } => log[entry].prev_hash[byte] ^= 1 << bit,
        Mutation::ShiftTime { entry } => {
            log[entry].sealed.recorded_at += chrono::Duration::microseconds(1);
        }
        Mutation::ChangeCount { entry } => {
            let details = &mut log[entry].sealed.event.details;
            if let Some(DetailValue::Count(n)) = details.get_mut(&Code::new("count")) {
                *n = n.wrapping_add(1);
            }
        }
        Mutation::ChangeAgentByte { entry } => match &mut log[entry].sealed.event.user_agent {
            Some(agent) if !agent.is_empty() => {
                let mut bytes = agent.clone().into_bytes();
                bytes[0] = if bytes[0] == b'x' { b'y' } else { b'x' };
                *agent = String::from_utf8(bytes).unwrap();
            }
            other => *other = Some("x".to_owned()),
        },
        Mutation::Delete { entry, close_gap } => {
            log.remove(entry);
            if close_gap {
                renumber(log);
            }
        }
        Mutation::Insert { entry } => {
            let mut fake = log[entry].clone();
            fake.sealed.event.action = action::DELETE;
            log.insert(entry, fake);
            renumber(log);
        }
        Mutation::Swap { entry } => {
            if log.len() < 2 {
                return false;
            }
            log.swap(entry, entry + 1);
            renumber(log);
        }
        Mutation::Truncate { keep } => log.truncate(keep),
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// With a checkpoint on the last entry (kept in the database), every single change,
    /// deletion, insertion, swap or truncation is detected.
    #[test]
    fn any_single_tampering_is_detected(
        (events, mutation) in prop::collection::vec(arb_event(), 2..30)
            .prop_flat_map(|events| { let len = events.len(); (Just(events), arb_mutation(len)) })
    ) {
        let original = log_of(events);
        let checkpoints = CheckpointSet::new([(checkpoint_at(&original, original.len() as u64), Origin::Database)]);
        prop_assert!(check(&original, &checkpoints).is_ok());
        let mut tampered = original.clone();
        if apply(&mut tampered, &mutation) && tampered != original {
            prop_assert!(
                matches!(check(&tampered, &checkpoints), Err(VerifyError::Tampered(_))),
                "{mutation:?} went unnoticed"
            );
        }
    }

    /// Even without any checkpoint, every change inside the log (all but cutting the
    /// tail) is detected by the chain alone.
    #[test]
    fn the_chain_alone_detects_changes_inside_the_log(
        (events, mutation) in prop::collection::vec(arb_event(), 3..30)
            .prop_flat_map(|events| { let len = events.len(); (Just(events), arb_mutation(len)) })
    ) {
        prop_assume!(!matches!(mutation, Mutation::Truncate { .. }));
        let original = log_of(events);
        let last = original.len() - 1;
        // Deleting the very last entry is a truncation: only a checkpoint can tell.
        prop_assume!(!matches!(mutation, Mutation::Delete { entry, .. } if entry == last));
        let mut tampered = original.clone();
        if apply(&mut tampered, &mutation) && tampered != original {
            prop_assert!(
                matches!(check(&tampered, &CheckpointSet::default()), Err(VerifyError::Tampered(_))),
                "{mutation:?} went unnoticed"
            );
        }
    }
}
