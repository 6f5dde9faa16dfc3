//! The sealed-field format: AES-256-GCM with the field's identity as associated data.
//!
//! Layout of a sealed value (all integers big-endian):
//!
//! ```text
//! format (1 byte = 1) ‖ key version (u32) ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)
//! ```
//!
//! The associated data is the length-prefixed (table, column, row id) followed by the
//! key version, so a value moved to another row, another column or relabelled with
//! another key version fails authentication. Nonces are 96 random bits from the OS
//! CSPRNG; a key version is rotated well before random nonces risk colliding.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::CryptoError;
use super::keyring::DataKey;

pub const FORMAT_V1: u8 = 1;
/// Only in builds with the `insecure-plaintext-fields` feature (benchmarks).
#[cfg(feature = "insecure-plaintext-fields")]
pub const FORMAT_PLAINTEXT: u8 = 0;
const HEADER_LEN: usize = 1 + 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Which field of which row a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldContext {
    pub table: &'static str,
    pub column: &'static str,
    pub row_id: Uuid,
}

/// The associated data binding a sealed value to its place.
pub fn associated_data(ctx: &FieldContext, key_version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    for part in [
        ctx.table.as_bytes(),
        ctx.column.as_bytes(),
        ctx.row_id.as_bytes().as_slice(),
    ] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad.extend_from_slice(&key_version.to_be_bytes());
    aad
}

/// Seals `plaintext` with a fresh random nonce.
pub fn seal(
    key: &DataKey,
    key_version: u32,
    ctx: &FieldContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    super::random_bytes(&mut nonce)?;
    seal_with_nonce(key, key_version, ctx, plaintext, &nonce)
}

/// Seals with a given nonce. Only for known-answer tests: a nonce must never repeat.
#[cfg(not(feature = "insecure-plaintext-fields"))]
pub(crate) fn seal_with_nonce(
    key: &DataKey,
    key_version: u32,
    ctx: &FieldContext,
    plaintext: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    let aad = associated_data(ctx, key_version);
    let sealed = cipher
        .encrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Decrypt)?;
    let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&key_version.to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The benchmark build: the header, then the plaintext.
#[cfg(feature = "insecure-plaintext-fields")]
pub(crate) fn seal_with_nonce(
    _key: &DataKey,
    key_version: u32,
    _ctx: &FieldContext,
    plaintext: &[u8],
    _nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![FORMAT_PLAINTEXT];
    out.extend_from_slice(&key_version.to_be_bytes());
    out.extend_from_slice(plaintext);
    Ok(out)
}

/// The key version a sealed value names.
pub fn key_version(sealed: &[u8]) -> Result<u32, CryptoError> {
    #[cfg(feature = "insecure-plaintext-fields")]
    if sealed.len() >= HEADER_LEN && sealed[0] == FORMAT_PLAINTEXT {
        return Ok(u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]));
    }
    if sealed.len() < HEADER_LEN + NONCE_LEN + TAG_LEN || sealed[0] != FORMAT_V1 {
        return Err(CryptoError::Decrypt);
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&sealed[1..HEADER_LEN]);
    Ok(u32::from_be_bytes(version))
}

/// Opens a sealed value for `ctx`.
pub fn open(key: &DataKey, ctx: &FieldContext, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    #[cfg(feature = "insecure-plaintext-fields")]
    if sealed.len() >= HEADER_LEN && sealed[0] == FORMAT_PLAINTEXT {
        return Ok(Zeroizing::new(sealed[HEADER_LEN..].to_vec()));
    }
    let version = key_version(sealed)?;
    let nonce: [u8; NONCE_LEN] = sealed[HEADER_LEN..HEADER_LEN + NONCE_LEN]
        .try_into()
        .map_err(|_| CryptoError::Decrypt)?;
    let body = &sealed[HEADER_LEN + NONCE_LEN..];
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    let aad = associated_data(ctx, version);
    cipher
        .decrypt(&Nonce::from(nonce), Payload { msg: body, aad: &aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(row: u128) -> FieldContext {
        FieldContext {
            table: "patients",
            column: "legal_name",
            row_id: Uuid::from_u128(row),
        }
    }

    fn key(byte: u8) -> DataKey {
        DataKey::from_bytes([byte; 32])
    }

    /// NIST SP 800-38D / McGrew–Viega test case 16 (AES-256, 96-bit IV, with AAD),
    /// run through the raw cipher our format wraps.
    #[test]
    fn aes_256_gcm_matches_the_published_known_answer() {
        let k = hex::decode("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308").unwrap();
        let iv = hex::decode("cafebabefacedbaddecaf888").unwrap();
        let pt = hex::decode(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        )
        .unwrap();
        let aad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
        let expected = hex::decode(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662\
             76fc6ece0f4e1768cddf8853bb2d551b",
        )
        .unwrap();
        let k: [u8; 32] = k.as_slice().try_into().unwrap();
        let cipher = Aes256Gcm::new((&k).into());
        let out = cipher
            .encrypt(
                &Nonce::try_from(iv.as_slice()).unwrap(),
                Payload { msg: &pt, aad: &aad },
            )
            .unwrap();
        assert_eq!(hex::encode(out), hex::encode(expected));
    }

    #[test]
    fn the_sealed_layout_is_format_version_nonce_ciphertext_tag() {
        let nonce = [7u8; 12];
        let sealed = seal_with_nonce(&key(1), 3, &ctx(1), b"Ada Lovelace", &nonce).unwrap();
        assert_eq!(sealed[0], FORMAT_V1);
        assert_eq!(&sealed[1..5], &3u32.to_be_bytes());
        assert_eq!(&sealed[5..17], &nonce);
        assert_eq!(sealed.len(), 1 + 4 + 12 + "Ada Lovelace".len() + 16);
        assert_eq!(
            open(&key(1), &ctx(1), &sealed).unwrap().as_slice(),
            b"Ada Lovelace"
        );
    }

    #[test]
    fn flipping_any_byte_fails_to_open() {
        let sealed = seal(&key(1), 1, &ctx(1), b"Ada Lovelace").unwrap();
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(
                open(&key(1), &ctx(1), &tampered).is_err(),
                "byte {i} flipped but opened"
            );
        }
    }

    #[test]
    fn a_value_moved_to_another_row_or_column_fails_to_open() {
        let sealed = seal(&key(1), 1, &ctx(1), b"Ada Lovelace").unwrap();
        assert!(open(&key(1), &ctx(2), &sealed).is_err());
        let other_column = FieldContext {
            column: "preferred_name",
            ..ctx(1)
        };
        assert!(open(&key(1), &other_column, &sealed).is_err());
    }

    #[test]
    fn the_same_plaintext_twice_gives_different_ciphertexts() {
        let a = seal(&key(1), 1, &ctx(1), b"Ada").unwrap();
        let b = seal(&key(1), 1, &ctx(1), b"Ada").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn the_wrong_key_fails_and_short_input_is_rejected() {
        let sealed = seal(&key(1), 1, &ctx(1), b"x").unwrap();
        assert!(open(&key(2), &ctx(1), &sealed).is_err());
        assert!(key_version(&sealed[..10]).is_err());
    }
}
