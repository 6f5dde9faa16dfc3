//! The public keys that checkpoints are verified with, and the file that publishes
//! them.
//!
//! Verifying the audit log needs only public keys: whoever holds one can check every
//! checkpoint, and nobody can sign with it. The server appends each signing key's
//! public half to a file beside its checkpoint file (`audit-checkpoints.jsonl` gets
//! `audit-checkpoints.keys.jsonl`), one JSON line per key, so that a key rotated out
//! stays listed. An auditor who does not want to trust that file, which sits where an
//! attacker with the server's disk could rewrite it, gets the key from the operator
//! through another channel (`carewire audit public-key`) and passes `--trusted-key`.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use carewire_audit::checkpoint::key_id;
use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

const LINE_KIND: &str = "carewire.audit.key.v1";

#[derive(Serialize, Deserialize)]
struct KeyLine {
    #[serde(rename = "type")]
    kind: String,
    key_id: String,
    /// Base64 of the 32-byte Ed25519 public key.
    public_key: String,
    published_at: DateTime<Utc>,
}

/// The public key file that goes with a checkpoint file.
pub fn key_file_for(checkpoint_file: &Path) -> PathBuf {
    let stem = checkpoint_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit-checkpoints".to_owned());
    checkpoint_file.with_file_name(format!("{stem}.keys.jsonl"))
}

/// A public key as `--trusted-key` and `CAREWIRE_AUDIT_TRUSTED_KEYS` give it: base64
/// of its 32 bytes.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "a trusted key is base64 of a 32-byte Ed25519 public key".to_owned())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "a trusted key is 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not an Ed25519 public key".to_owned())
}

/// The form `parse_public_key` reads.
pub fn format_public_key(key: &VerifyingKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

/// Every key in a public key file. A missing or unreadable file, or a line that is
/// not a key, is an error.
pub fn read_key_file(path: &Path) -> anyhow::Result<Vec<VerifyingKey>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the public key file {}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad =
            |why: String| anyhow::anyhow!("line {} of {} is not a public key: {why}", n + 1, path.display());
        let line: KeyLine = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if line.kind != LINE_KIND {
            return Err(bad("not a carewire audit key".to_owned()));
        }
        let key = parse_public_key(&line.public_key).map_err(bad)?;
        if key_id(&key) != line.key_id {
            return Err(bad("its key_id does not match the key".to_owned()));
        }
        keys.push(key);
    }
    anyhow::ensure!(
        !keys.is_empty(),
        "the public key file {} lists no key",
        path.display()
    );
    Ok(keys)
}

/// Adds `key` to the public key file unless it is listed already.
pub fn publish(path: &Path, key: &VerifyingKey) -> anyhow::Result<()> {
    if path.exists() && read_key_file(path)?.contains(key) {
        return Ok(());
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let line = KeyLine {
        kind: LINE_KIND.to_owned(),
        key_id: key_id(key),
        public_key: format_public_key(key),
        published_at: Utc::now(),
    };
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{}", serde_json::to_string(&line)?)?;
    file.sync_data()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_key_reads_back_once_however_often_it_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file_for(&dir.path().join("audit-checkpoints.jsonl"));
        assert!(path.ends_with("audit-checkpoints.keys.jsonl"));
        let first = carewire_audit::CheckpointSigner::from_seed(&[1; 32]).verifying_key();
        let second = carewire_audit::CheckpointSigner::from_seed(&[2; 32]).verifying_key();
        publish(&path, &first).unwrap();
        publish(&path, &first).unwrap();
        publish(&path, &second).unwrap();
        assert_eq!(read_key_file(&path).unwrap(), vec![first, second]);
        assert_eq!(parse_public_key(&format_public_key(&first)).unwrap(), first);
    }

    #[test]
    fn a_key_line_whose_id_does_not_match_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.jsonl");
        let key = carewire_audit::CheckpointSigner::from_seed(&[1; 32]).verifying_key();
        let line = format!(
            r#"{{"type":"{LINE_KIND}","key_id":"0000000000000000","public_key":"{}","published_at":"2026-12-07T00:00:00Z"}}"#,
            format_public_key(&key)
        );
        std::fs::write(&path, line).unwrap();
        assert!(read_key_file(&path).unwrap_err().to_string().contains("key_id"));
        assert!(read_key_file(&dir.path().join("missing")).is_err());
    }
}
