//! The key-encryption key: where it comes from, and wrapping keys with it.
//!
//! The KEK is configured (`CAREWIRE_KEK`, or a file named by `CAREWIRE_KEK_FILE`); in
//! development, when neither is set, one is generated into the data folder with a
//! loud warning. It wraps data keys and the index root with AES-256-GCM; its id (a
//! short fingerprint) is stored beside each wrapped key so that a wrong KEK is named
//! clearly instead of failing as "decryption failed".

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::CryptoError;
use super::secrets;
use crate::config::{Environment, Settings};

/// A 256-bit key-encryption key. Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Kek([u8; 32]);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek(id={}, [redacted])", self.id())
    }
}

/// Where the KEK came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
    Setting,
    File,
    GeneratedForDevelopment,
}

impl Kek {
    pub fn from_bytes(bytes: [u8; 32]) -> Kek {
        Kek(bytes)
    }

    /// The KEK from settings, or in development a generated one kept in
    /// `data_dir/keys/kek`.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<(Kek, KekSource)> {
        if let Some(kek) = &settings.crypto.kek {
            return Ok((Kek::from_slice(kek.expose_secret())?, KekSource::Setting));
        }
        if let Some(path) = &settings.crypto.kek_file {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read CAREWIRE_KEK_FILE {}: {e}", path.display()))?,
            );
            let bytes = Zeroizing::new(
                crate::config::parse_key(&text)
                    .map_err(|e| anyhow::anyhow!("CAREWIRE_KEK_FILE {}: {e}", path.display()))?,
            );
            return Ok((Kek::from_slice(&bytes)?, KekSource::File));
        }
        if settings.environment == Environment::Production {
            anyhow::bail!("CAREWIRE_KEK or CAREWIRE_KEK_FILE is required in production");
        }
        let path = settings.data_dir.join("keys").join("kek");
        let (bytes, generated) = secrets::load_or_generate(&path, 32)?;
        if generated {
            warn_generated(&path);
        }
        Ok((Kek::from_slice(&bytes)?, KekSource::GeneratedForDevelopment))
    }

    fn from_slice(bytes: &[u8]) -> anyhow::Result<Kek> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the KEK must be 32 bytes"))?;
        Ok(Kek(array))
    }

    /// A short public fingerprint of the key (not usable to recover it).
    pub fn id(&self) -> String {
        let digest = Sha256::new_with_prefix(b"carewire/kek-id/v1")
            .chain_update(self.0)
            .finalize();
        hex::encode(&digest[..8])
    }

    /// Wraps `key` for storage, bound to `label` (which names what the key is).
    pub fn wrap(&self, label: &[u8], key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; 12];
        super::random_bytes(&mut nonce)?;
        let cipher = Aes256Gcm::new((&self.0).into());
        let sealed = cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: key, aad: label })
            .map_err(|_| CryptoError::Decrypt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Unwraps a key wrapped by [`Kek::wrap`] with the same label.
    pub fn unwrap_key(&self, label: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if wrapped.len() < 12 + 16 {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, body) = wrapped.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Decrypt)?;
        let cipher = Aes256Gcm::new((&self.0).into());
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: body,
                    aad: label,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Decrypt)
    }
}

fn warn_generated(path: &Path) {
    tracing::warn!(
        path = %path.display(),
        "GENERATED A DEVELOPMENT KEY-ENCRYPTION KEY. Anyone holding this file and a copy of the \
         database can read every encrypted field. Back it up (losing it loses the data) and, in \
         production, set CAREWIRE_KEK or CAREWIRE_KEK_FILE instead."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_unwraps_only_with_the_same_kek_and_label() {
        let kek = Kek::from_bytes([1; 32]);
        let wrapped = kek.wrap(b"dek/1", &[9; 32]).unwrap();
        assert_eq!(kek.unwrap_key(b"dek/1", &wrapped).unwrap().as_slice(), &[9; 32]);
        assert!(kek.unwrap_key(b"dek/2", &wrapped).is_err());
        assert!(Kek::from_bytes([2; 32]).unwrap_key(b"dek/1", &wrapped).is_err());
    }

    #[test]
    fn debug_shows_the_id_not_the_key() {
        let shown = format!("{:?}", Kek::from_bytes([0xAB; 32]));
        assert!(shown.contains("redacted"));
        assert!(!shown.to_lowercase().contains("abab"));
    }
}
