//! The Ed25519 key that signs audit checkpoints, and the keys trusted to verify them.
//!
//! Configured with `CAREWIRE_AUDIT_SIGNING_KEY` (base64 of a 32-byte seed) or
//! `CAREWIRE_AUDIT_SIGNING_KEY_FILE`; in development one is generated into the data
//! folder with a loud warning. Verifying needs only public keys: the ones in
//! `CAREWIRE_AUDIT_TRUSTED_KEYS` and those the sealer publishes (`audit::trust`).

use carewire_audit::CheckpointSigner;
use ed25519_dalek::VerifyingKey;
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::config::{Environment, Settings};

/// Where the development signing key is generated.
fn development_key_path(settings: &Settings) -> std::path::PathBuf {
    settings.data_dir.join("keys").join("audit-signing-key")
}

/// The configured signing key's seed, or the development key already generated; none
/// otherwise. Never generates one.
fn configured_seed(settings: &Settings) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    let audit = &settings.audit;
    if let Some(key) = &audit.signing_key {
        return Ok(Some(Zeroizing::new(key.expose_secret().clone())));
    }
    if let Some(path) = &audit.signing_key_file {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read CAREWIRE_AUDIT_SIGNING_KEY_FILE {}: {e}",
                path.display()
            )
        })?);
        return Ok(Some(Zeroizing::new(crate::config::parse_key(&text).map_err(
            |e| anyhow::anyhow!("CAREWIRE_AUDIT_SIGNING_KEY_FILE {}: {e}", path.display()),
        )?)));
    }
    let path = development_key_path(settings);
    if settings.environment != Environment::Production && path.exists() {
        let (bytes, _) = super::secrets::load_or_generate(&path, 32)?;
        return Ok(Some(bytes));
    }
    Ok(None)
}

fn signer_from(seed: &[u8]) -> anyhow::Result<CheckpointSigner> {
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
        seed.try_into()
            .map_err(|_| anyhow::anyhow!("the audit signing key must be 32 bytes"))?,
    );
    Ok(CheckpointSigner::from_seed(&seed))
}

/// The configured signer (or the development one already generated), without ever
/// generating a key: for commands that only show it.
pub fn configured_signer(settings: &Settings) -> anyhow::Result<Option<CheckpointSigner>> {
    configured_seed(settings)?
        .map(|seed| signer_from(&seed))
        .transpose()
}

/// The checkpoint signer from settings; in development one is generated when none
/// is configured.
pub fn checkpoint_signer(settings: &Settings) -> anyhow::Result<CheckpointSigner> {
    if let Some(seed) = configured_seed(settings)? {
        return signer_from(&seed);
    }
    anyhow::ensure!(
        settings.environment != Environment::Production,
        "CAREWIRE_AUDIT_SIGNING_KEY is required in production"
    );
    let path = development_key_path(settings);
    let (bytes, generated) = super::secrets::load_or_generate(&path, 32)?;
    if generated {
        tracing::warn!(
            path = %path.display(),
            "GENERATED A DEVELOPMENT AUDIT SIGNING KEY. Checkpoints signed with it prove nothing to \
             anyone who can read this file; in production set CAREWIRE_AUDIT_SIGNING_KEY and keep the \
             key away from the database's administrators."
        );
    }
    signer_from(&bytes)
}

/// The public keys trusted to have signed checkpoints: the current key's, when
/// given, and those in `CAREWIRE_AUDIT_TRUSTED_KEYS`.
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
