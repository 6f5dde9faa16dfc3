//! Signed checkpoints: (log size, head hash, time), signed with Ed25519.
//!
//! A checkpoint commits to the whole log up to its size. It is stored in the database
//! and also appended to a sink outside it (a JSON-lines file, and the server log), so
//! that a database restored from an old backup, or rewritten by someone who recomputed
//! every hash, disagrees with a checkpoint it cannot forge.

use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::Hash;

/// What a checkpoint says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Number of entries covered (the last sequence number).
    pub size: u64,
    /// The chain hash of entry `size`.
    pub head: Hash,
    pub at: DateTime<Utc>,
}

impl Checkpoint {
    /// The exact bytes that are signed.
    pub fn signed_message(&self) -> Vec<u8> {
        format!(
            "carewire audit checkpoint v1\n{}\n{}\n{}\n",
            self.size,
            hex::encode(self.head),
            self.at.timestamp_micros()
        )
        .into_bytes()
    }
}

/// A checkpoint with its signature and the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub key_id: String,
    pub signature: [u8; 64],
}

/// Why a checkpoint line or signature is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("no trusted key has id {0}")]
    UnknownKey(String),
    #[error("the signature does not verify")]
    BadSignature,
}

/// The short id of a verifying key: the first 8 bytes of SHA-256 of it, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::new_with_prefix(b"carewire/audit/v1/key-id")
        .chain_update(key.as_bytes())
        .finalize();
    hex::encode(&digest[..8])
}

/// Signs checkpoints.
pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// From the 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> CheckpointSigner {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&key.verifying_key());
        CheckpointSigner { key, key_id }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn sign(&self, checkpoint: Checkpoint) -> SignedCheckpoint {
        let signature = self.key.sign(&checkpoint.signed_message());
        SignedCheckpoint {
            checkpoint,
            key_id: self.key_id.clone(),
            signature: signature.to_bytes(),
        }
    }
}

impl SignedCheckpoint {
    /// Checks the signature against the trusted keys.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<(), CheckpointError> {
        let key = trusted
            .iter()
            .find(|k| key_id(k) == self.key_id)
            .ok_or_else(|| CheckpointError::UnknownKey(self.key_id.clone()))?;
        key.verify_strict(
            &self.checkpoint.signed_message(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| CheckpointError::BadSignature)
    }

    /// One line of the external sink (JSON, no newline).
    pub fn to_json_line(&self) -> String {
        let line = CheckpointLine {
            kind: LINE_KIND.to_owned(),
            size: self.checkpoint.size,
            head: hex::encode(self.checkpoint.head),
            at: self.checkpoint.at,
            key_id: self.key_id.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(self.signature),
        };
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Parses a line written by [`SignedCheckpoint::to_json_line`].
    pub fn from_json_line(line: &str) -> Result<SignedCheckpoint, CheckpointError> {
        let malformed = |what: &str| CheckpointError::Malformed(what.to_owned());
        let line: CheckpointLine =
            serde_json::from_str(line).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        if line.kind != LINE_KIND {
            return Err(malformed("not a carewire audit checkpoint"));
        }
        let head: Hash = hex::decode(&line.head)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| malformed("head is not 32 bytes of hex"))?;
        let signature: [u8; 64] = base64::engine::general_purpose::STANDARD
            .decode(&line.signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| malformed("signature is not 64 bytes of base64"))?;
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint {
                size: line.size,
                head,
                at: line.at,
            },
            key_id: line.key_id,
            signature,
        })
    }
}

const LINE_KIND: &str = "carewire.audit.checkpoint.v1";

#[derive(Serialize, Deserialize)]
struct CheckpointLine {
    #[serde(rename = "type")]
    kind: String,
    size: u64,
    head: String,
    at: DateTime<Utc>,
    key_id: String,
    signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            size: 42,
            head: [7; 32],
            at: DateTime::from_timestamp_micros(1_764_000_000_000_000).unwrap(),
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_survives_its_json_line() {
        let signer = CheckpointSigner::from_seed(&[1; 32]);
        let signed = signer.sign(checkpoint());
        let line = signed.to_json_line();
        let parsed = SignedCheckpoint::from_json_line(&line).unwrap();
        assert_eq!(parsed, signed);
        parsed.verify(&[signer.verifying_key()]).unwrap();
    }

    #[test]
    fn a_changed_size_or_head_fails_and_an_unknown_key_is_named() {
        let signer = CheckpointSigner::from_seed(&[1; 32]);
        let mut signed = signer.sign(checkpoint());
        signed.checkpoint.size = 41;
        assert_eq!(
            signed.verify(&[signer.verifying_key()]),
            Err(CheckpointError::BadSignature)
        );
        let other = CheckpointSigner::from_seed(&[2; 32]);
        assert!(matches!(
            signer.sign(checkpoint()).verify(&[other.verifying_key()]),
            Err(CheckpointError::UnknownKey(_))
        ));
    }
}
