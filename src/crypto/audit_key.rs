//! The Ed25519 key that signs audit checkpoints, and the keys trusted to verify them.
//!
//! Configured with `CAREWIRE_AUDIT_SIGNING_KEY` (base64 of a 32-byte seed) or
//! `CAREWIRE_AUDIT_SIGNING_KEY_FILE`; in development one is generated into the data
//! folder with a loud warning. Checkpoints signed by earlier keys stay verifiable
//! through `CAREWIRE_AUDIT_TRUSTED_KEYS` (their public keys).

use carewire_audit::CheckpointSigner;
use ed25519_dalek::VerifyingKey;
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::config::{Environment, Settings};

/// The checkpoint signer from settings.
pub fn checkpoint_signer(settings: &Settings) -> anyhow::Result<CheckpointSigner> {
    let audit = &settings.audit;
    let seed: Zeroizing<Vec<u8>> = if let Some(key) = &audit.signing_key {
        Zeroizing::new(key.expose_secret().clone())
    } else if let Some(path) = &audit.signing_key_file {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read CAREWIRE_AUDIT_SIGNING_KEY_FILE {}: {e}",
                path.display()
            )
        })?);
        Zeroizing::new(
            crate::config::parse_key(&text)
                .map_err(|e| anyhow::anyhow!("CAREWIRE_AUDIT_SIGNING_KEY_FILE {}: {e}", path.display()))?,
        )
    } else {
        anyhow::ensure!(
            settings.environment != Environment::Production,
            "CAREWIRE_AUDIT_SIGNING_KEY is required in production"
        );
        let path = settings.data_dir.join("keys").join("audit-signing-key");
        let (bytes, generated) = super::secrets::load_or_generate(&path, 32)?;
        if generated {
            tracing::warn!(
                path = %path.display(),
                "GENERATED A DEVELOPMENT AUDIT SIGNING KEY. Checkpoints signed with it prove nothing to \
                 anyone who can read this file; in production set CAREWIRE_AUDIT_SIGNING_KEY and keep the \
                 key away from the database's administrators."
            );
        }
        bytes
    };
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
        seed.as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("the audit signing key must be 32 bytes"))?,
    );
    Ok(CheckpointSigner::from_seed(&seed))
}

/// The public keys trusted to have signed checkpoints: the current key's and any
/// earlier ones from `CAREWIRE_AUDIT_TRUSTED_KEYS`.
pub fn trusted_keys(
    settings: &Settings,
    current: Option<&CheckpointSigner>,
) -> anyhow::Result<Vec<VerifyingKey>> {
    let mut keys: Vec<VerifyingKey> = current.map(CheckpointSigner::verifying_key).into_iter().collect();
    for bytes in &settings.audit.trusted_keys {
        keys.push(VerifyingKey::from_bytes(bytes).map_err(|_| {
            anyhow::anyhow!("CAREWIRE_AUDIT_TRUSTED_KEYS holds a key that is not an Ed25519 public key")
        })?);
    }
    Ok(keys)
}
