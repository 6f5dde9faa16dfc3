//! The hash chain: `hash_n = SHA-256(tag ‖ hash_{n−1} ‖ encoding(event_n))`, starting
//! from 32 zero bytes.

use sha2::{Digest, Sha256};

use crate::encoding::{SealedEvent, encode};

pub type Hash = [u8; 32];

/// The hash before the first entry.
pub const GENESIS: Hash = [0u8; 32];

/// Domain separation: these hashes mean nothing anywhere else.
const ENTRY_TAG: &[u8] = b"carewire/audit/v1/entry\0";

/// The chain hash of an entry whose encoding is `encoded`, following `prev`.
pub fn entry_hash(prev: &Hash, encoded: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(ENTRY_TAG);
    hasher.update(prev);
    hasher.update(encoded);
    hasher.finalize().into()
}

/// The head of the chain: how many entries, and the last hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub hash: Hash,
}

impl Head {
    pub const EMPTY: Head = Head {
        size: 0,
        hash: GENESIS,
    };

    /// Appends an event stamped with the next sequence number; returns the previous
    /// hash and the new one.
    pub fn append(&mut self, sealed: &SealedEvent) -> (Hash, Hash) {
        debug_assert_eq!(sealed.seq, self.size + 1, "events are appended in sequence");
        let prev = self.hash;
        let hash = entry_hash(&prev, &encode(sealed));
        self.size = sealed.seq;
        self.hash = hash;
        (prev, hash)
    }
}
