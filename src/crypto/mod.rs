//! Field-level encryption and blind indexes: the only module that touches key material.
//!
//! The key hierarchy:
//! - the **KEK** (key-encryption key, 256 bits) comes from configuration and never
//!   reaches the database ([`kek`]);
//! - **data keys** (DEKs), one per version, random, stored in `data_keys` only wrapped
//!   by the KEK ([`keyring`]); new writes use the newest version, older versions still
//!   decrypt until they are retired (which destroys them);
//! - the **index root key**, random, stored wrapped in `index_keys`; per-field
//!   blind-index keys are derived from it with HKDF ([`blind_index`]).
//!
//! A field is sealed with AES-256-GCM under a data key, bound to its table, column,
//! row id and key version through the associated data ([`field`]), so a ciphertext
//! copied to another row or column does not decrypt. Plaintext leaves this module
//! only in zeroizing buffers, and no error carries any of it.
//!
//! Each data key counts its encryptions (reserved from the database in blocks over a
//! connection of its own, so the count never rolls back with a request): at
//! `CAREWIRE_KEY_MAX_ENCRYPTIONS` (2^30 by default, far below the 2^32 that random
//! 96-bit nonces allow) a new version is created and used. Every instance reloads the
//! key ring every `CAREWIRE_KEYRING_REFRESH_SECS`, so a rotation made anywhere (the
//! CLI, another instance) is picked up without a restart. [`rotation`] holds the
//! operator's commands: rotate, rewrap, retire, status, and rotating the KEK itself.

pub mod audit_key;
pub mod blind_index;
pub mod field;
pub mod fields;
pub mod kek;
pub mod keyring;
pub mod rotation;
pub mod secrets;

use std::sync::{Arc, Mutex, RwLock};

use diesel::Connection;
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
    /// The ciphertext names a key version this key ring does not hold (never created,
    /// or retired and destroyed).
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
    #[error("the key store is unreachable: {0}")]
    Unavailable(String),
    #[error("the operating system's random number generator failed")]
    Rng,
}

impl CryptoError {
    /// Whether this is a decryption failure (tampering or a misplaced ciphertext).
    pub fn is_decryption_failure(&self) -> bool {
        matches!(self, CryptoError::Decrypt | CryptoError::UnknownKeyVersion(_))
    }
}

impl From<CryptoError> for crate::Error {
    fn from(err: CryptoError) -> Self {
        match err {
            CryptoError::Storage(db) => db.into(),
            CryptoError::Unavailable(_) => crate::Error::Unavailable("the key store is unreachable"),
            // Deliberately generic: which field failed, and why, goes to the log and the
            // audit trail, never to the client.
            other => crate::Error::Internal(anyhow::Error::new(other)),
        }
    }
}

/// Knobs for the key ring.
#[derive(Debug, Clone, Copy)]
pub struct CryptoOptions {
    /// Encryptions a data key may perform before a new version takes over.
    pub max_encryptions_per_key: u64,
}

impl Default for CryptoOptions {
    fn default() -> Self {
        CryptoOptions {
            max_encryptions_per_key: 1 << 30,
        }
    }
}

/// The server's cryptographic state. Cheap to clone.
#[derive(Clone)]
pub struct Crypto {
    inner: Arc<Inner>,
}

struct Inner {
    keyring: RwLock<Arc<Keyring>>,
    index_root: blind_index::IndexRoot,
    kek: Kek,
    store: Mutex<KeyStore>,
    budget: Mutex<Budget>,
    options: CryptoOptions,
}

/// The connection the key ring uses for itself: loading keys and reserving
/// encryptions outside any request's transaction.
struct KeyStore {
    url: String,
    conn: Option<PgConnection>,
}

impl KeyStore {
    fn conn(&mut self) -> Result<&mut PgConnection, CryptoError> {
        if self.conn.is_none() {
            let conn =
                PgConnection::establish(&self.url).map_err(|e| CryptoError::Unavailable(e.to_string()))?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| CryptoError::Unavailable("no connection".into()))
    }

    /// Runs `f`, dropping the connection if it failed so the next call reconnects.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut PgConnection) -> Result<T, CryptoError>,
    ) -> Result<T, CryptoError> {
        let result = f(self.conn()?);
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// Encryptions reserved and not yet used, for one key version.
#[derive(Debug, Default)]
struct Budget {
    version: u32,
    remaining: u64,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("current_key_version", &self.current_version())
            .finish_non_exhaustive()
    }
}

impl Crypto {
    /// Opens the key ring on its own connection to `database_url`, creating the first
    /// data key and the index root on a new database.
    pub fn open(database_url: &str, kek: Kek, options: CryptoOptions) -> Result<Crypto, CryptoError> {
        let mut store = KeyStore {
            url: database_url.to_owned(),
            conn: None,
        };
        let (keyring, index_root) = store.with(|conn| {
            let keyring = Keyring::load_or_init(conn, &kek)?;
            let index_root = blind_index::IndexRoot::load_or_init(conn, &kek)?;
            Ok((keyring, index_root))
        })?;
        Ok(Crypto {
            inner: Arc::new(Inner {
                keyring: RwLock::new(Arc::new(keyring)),
                index_root,
                kek,
                store: Mutex::new(store),
                budget: Mutex::new(Budget::default()),
                options,
            }),
        })
    }

    /// Reloads the key ring: picks up versions created or retired elsewhere.
    pub fn refresh(&self) -> Result<(), CryptoError> {
        let kek = &self.inner.kek;
        let keyring = self.store().with(|conn| Keyring::load_or_init(conn, kek))?;
        let mut current = self.inner.keyring.write().unwrap_or_else(|p| p.into_inner());
        if current.current_version() != keyring.current_version() {
            tracing::info!(
                key.version = keyring.current_version(),
                "new writes use a new data key version"
            );
        }
        *current = Arc::new(keyring);
        Ok(())
    }

    fn store(&self) -> std::sync::MutexGuard<'_, KeyStore> {
        self.inner.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keyring(&self) -> Arc<Keyring> {
        self.inner
            .keyring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The version new writes use.
    pub fn current_version(&self) -> u32 {
        self.keyring().current_version()
    }

    /// Takes one encryption from the budget of the current key, reserving another
    /// block (or rotating, at the limit) when it runs out. Returns the version to use.
    fn take_encryption(&self) -> Result<u32, CryptoError> {
        let mut budget = self.inner.budget.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current_version();
        if budget.version != current {
            *budget = Budget {
                version: current,
                remaining: 0,
            };
        }
        if budget.remaining == 0 {
            let max = self.inner.options.max_encryptions_per_key;
            let block = (max / 64).clamp(1, 4096);
            let used = self
                .store()
                .with(|conn| keyring::reserve_encryptions(conn, current, block))?;
            if used > max {
                // This key has done its share: a new version takes over everywhere.
                let kek = &self.inner.kek;
                let version = self.store().with(|conn| keyring::create_version(conn, kek))?;
                tracing::warn!(
                    key.version = current,
                    new.version = version,
                    "data key reached its encryption limit; rotated"
                );
                drop(budget);
                self.refresh()?;
                return self.take_encryption();
            }
            budget.remaining = block;
        }
        budget.remaining -= 1;
        Ok(current)
    }

    /// Seals `plaintext` for one field of one row under the newest data key.
    pub fn encrypt(&self, ctx: &FieldContext, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let version = self.take_encryption()?;
        let keyring = self.keyring();
        let key = keyring
            .get(version)
            .ok_or(CryptoError::UnknownKeyVersion(version))?;
        field::seal(key, version, ctx, plaintext)
    }

    /// Opens a field sealed by [`Crypto::encrypt`] for the same table, column and row.
    pub fn decrypt(&self, ctx: &FieldContext, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let version = field::key_version(sealed)?;
        let mut keyring = self.keyring();
        if keyring.get(version).is_none() && version > keyring.current_version() {
            // Written by an instance that already knows a newer key: catch up.
            self.refresh()?;
            keyring = self.keyring();
        }
        let key = keyring
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

    /// The KEK, for the rotation commands (they wrap new data keys).
    pub(crate) fn kek(&self) -> &Kek {
        &self.inner.kek
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
