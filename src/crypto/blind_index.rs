//! Keyed blind indexes: exact-match lookup over encrypted fields.
//!
//! A blind index is HMAC-SHA256 of the normalized value under a per-index key derived
//! with HKDF from the index root key, truncated to the index's length. Without the
//! key, an index value says nothing about the plaintext. Long indexes (32 bytes) are
//! unique and can back a UNIQUE constraint (an account's email); short ones collide
//! on purpose, so callers confirm candidates after decryption.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{CryptoError, Kek};
use crate::schema::index_keys;

pub const WRAP_LABEL: &[u8] = b"carewire/index-root/v1";

/// One blind index: its name (part of the key derivation) and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlindIndex {
    pub name: &'static str,
    pub len: usize,
}

impl BlindIndex {
    pub const fn new(name: &'static str, len: usize) -> BlindIndex {
        assert!(len > 0 && len <= 32);
        BlindIndex { name, len }
    }
}

/// The root every per-index key derives from. Zeroized on drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct IndexRoot([u8; 32]);

impl std::fmt::Debug for IndexRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexRoot([redacted])")
    }
}

impl IndexRoot {
    pub fn from_bytes(bytes: [u8; 32]) -> IndexRoot {
        IndexRoot(bytes)
    }

    pub fn load_or_init(conn: &mut PgConnection, kek: &Kek) -> Result<IndexRoot, CryptoError> {
        let load = |conn: &mut PgConnection| {
            index_keys::table
                .select((index_keys::wrapped_key, index_keys::kek_id))
                .first::<(Vec<u8>, String)>(conn)
                .optional()
        };
        let row = match load(conn)? {
            Some(row) => row,
            None => {
                let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
                super::random_bytes(&mut *bytes)?;
                diesel::insert_into(index_keys::table)
                    .values((
                        index_keys::id.eq(1i16),
                        index_keys::wrapped_key.eq(kek.wrap(WRAP_LABEL, &*bytes)?),
                        index_keys::kek_id.eq(kek.id()),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)?;
                load(conn)?.ok_or(CryptoError::Decrypt)?
            }
        };
        let (wrapped, kek_id) = row;
        if kek_id != kek.id() {
            return Err(CryptoError::WrongKek {
                configured: kek.id(),
                stored: kek_id,
            });
        }
        let bytes = kek.unwrap_key(WRAP_LABEL, &wrapped)?;
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| CryptoError::Decrypt)?;
        Ok(IndexRoot(array))
    }

    /// The index value of `value` (already normalized by the caller).
    pub fn compute(&self, index: &BlindIndex, value: &[u8]) -> Vec<u8> {
        let mut field_key = zeroize::Zeroizing::new([0u8; 32]);
        let info = format!("carewire/blind-index/v1/{}", index.name);
        Hkdf::<Sha256>::new(None, &self.0)
            .expand(info.as_bytes(), &mut *field_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&*field_key).expect("HMAC takes any key length");
        mac.update(value);
        let mut out = mac.finalize().into_bytes().to_vec();
        out.truncate(index.len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMAIL: BlindIndex = BlindIndex::new("accounts.email", 32);
    const PHONE: BlindIndex = BlindIndex::new("patients.phone", 4);

    #[test]
    fn the_same_value_gives_the_same_index_and_different_indexes_differ() {
        let root = IndexRoot::from_bytes([3; 32]);
        assert_eq!(
            root.compute(&EMAIL, b"ada@example.org"),
            root.compute(&EMAIL, b"ada@example.org")
        );
        assert_ne!(
            root.compute(&EMAIL, b"ada@example.org"),
            root.compute(&EMAIL, b"bob@example.org")
        );
    }

    #[test]
    fn each_index_has_its_own_key_and_length() {
        let root = IndexRoot::from_bytes([3; 32]);
        let as_email = root.compute(&EMAIL, b"5551234");
        let as_phone = root.compute(&PHONE, b"5551234");
        assert_eq!(as_email.len(), 32);
        assert_eq!(as_phone.len(), 4);
        assert_ne!(&as_email[..4], as_phone.as_slice());
    }

    #[test]
    fn another_root_gives_unrelated_indexes() {
        let a = IndexRoot::from_bytes([3; 32]).compute(&EMAIL, b"ada@example.org");
        let b = IndexRoot::from_bytes([4; 32]).compute(&EMAIL, b"ada@example.org");
        assert_ne!(a, b);
    }
}
