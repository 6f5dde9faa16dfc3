//! Field-level encryption and blind indexes: the only module that touches key material.
//!
//! The key hierarchy:
//! - the **KEK** (key-encryption key, 256 bits) comes from configuration and never
//!   reaches the database ([`kek`]);
//! - **data keys** (DEKs), one per version, random, stored in `data_keys` only wrapped
//!   by the KEK ([`keyring`]); new writes use the newest version, older versions still
//!   decrypt;
//! - the **index root key**, random, stored wrapped in `index_keys`; per-field
//!   blind-index keys are derived from it with HKDF ([`blind_index`]).
//!
//! A field is sealed with AES-256-GCM under a data key, bound to its table, column,
//! row id and key version through the associated data ([`field`]), so a ciphertext
//! copied to another row or column does not decrypt. Plaintext leaves this module
//! only in zeroizing buffers, and no error carries any of it.

pub mod audit_key;
pub mod blind_index;
pub mod field;
pub mod kek;
pub mod keyring;
pub mod secrets;

use std::sync::Arc;

use diesel::pg::PgConnection;
use uuid::Uuid;
use zeroize::Zeroizing;

pub use blind_index::BlindIndex;
pub use field::FieldContext;
pub use kek::Kek;
use keyring::Keyring;

/// Every way encryption or decryption can fail. Carries no plaintext and no key.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The ciphertext does not authenticate under this context: tampered, moved to
    /// another row or column, or sealed under another key.
    #[error("ciphertext failed to decrypt")]
    Decrypt,
    /// The ciphertext names a key version this key ring does not hold.
    #[error("unknown key version {0}")]
    UnknownKeyVersion(u32),
    /// The configured KEK is not the one that wrapped the stored keys.
    #[error(
        "the configured KEK (id {configured}) is not the one that wrapped the stored keys (id {stored}); \
         set CAREWIRE_KEK or CAREWIRE_KEK_FILE to the right key"
    )]
    WrongKek { configured: String, stored: String },
    #[error("key storage failed: {0}")]
    Storage(#[from] diesel::result::Error),
    #[error("the operating system's random number generator failed")]
    Rng,
}

impl From<CryptoError> for crate::Error {
    fn from(err: CryptoError) -> Self {
        match err {
            CryptoError::Storage(db) => db.into(),
            // Deliberately generic: which field failed, and why, goes to the log and the
            // audit trail, never to the client.
            other => crate::Error::Internal(anyhow::Error::new(other)),
        }
    }
}

/// The server's cryptographic state: the unwrapped key ring and index root.
/// Cheap to clone.
#[derive(Clone)]
pub struct Crypto {
    inner: Arc<Inner>,
}

struct Inner {
    keyring: Keyring,
    index_root: blind_index::IndexRoot,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("current_key_version", &self.inner.keyring.current_version())
            .finish_non_exhaustive()
    }
}

impl Crypto {
    /// Loads the key ring, creating the first data key and the index root on a new
    /// database.
    pub fn load_or_init(conn: &mut PgConnection, kek: &Kek) -> Result<Crypto, CryptoError> {
        let keyring = Keyring::load_or_init(conn, kek)?;
        let index_root = blind_index::IndexRoot::load_or_init(conn, kek)?;
        Ok(Crypto {
            inner: Arc::new(Inner { keyring, index_root }),
        })
    }

    /// Seals `plaintext` for one field of one row under the newest data key.
    pub fn encrypt(&self, ctx: &FieldContext, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (version, key) = self.inner.keyring.current();
        field::seal(key, version, ctx, plaintext)
    }

    /// Opens a field sealed by [`Crypto::encrypt`] for the same table, column and row.
    pub fn decrypt(&self, ctx: &FieldContext, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let version = field::key_version(sealed)?;
        let key = self
            .inner
            .keyring
            .get(version)
            .ok_or(CryptoError::UnknownKeyVersion(version))?;
        field::open(key, ctx, sealed)
    }

    pub fn encrypt_str(&self, ctx: &FieldContext, plaintext: &str) -> Result<Vec<u8>, CryptoError> {
        self.encrypt(ctx, plaintext.as_bytes())
    }

    /// Opens a text field. Invalid UTF-8 inside an authentic ciphertext cannot happen
    /// unless we wrote it, so it counts as a decryption failure.
    pub fn decrypt_string(
        &self,
        ctx: &FieldContext,
        sealed: &[u8],
    ) -> Result<Zeroizing<String>, CryptoError> {
        let bytes = self.decrypt(ctx, sealed)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| CryptoError::Decrypt)?;
        Ok(Zeroizing::new(text.to_owned()))
    }

    /// The keyed blind index of `value` for exact-match lookup.
    pub fn blind_index(&self, index: &BlindIndex, value: &[u8]) -> Vec<u8> {
        self.inner.index_root.compute(index, value)
    }
}

/// A field of a row, ready for [`Crypto::encrypt`].
pub fn field(table: &'static str, column: &'static str, row_id: Uuid) -> FieldContext {
    FieldContext {
        table,
        column,
        row_id,
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|_| CryptoError::Rng)
}
