//! Versioned data-encryption keys, stored in `data_keys` wrapped by the KEK.
//!
//! New writes use the newest key that is not retired; every version still held
//! decrypts. Retiring a version destroys its wrapped key (crypto-shredding), so
//! nothing sealed under it can be opened again. On a new database the first version
//! is created here; several instances starting at once agree on it through the
//! primary key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{CryptoError, Kek};
use crate::schema::data_keys;

/// A 256-bit data key. Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);

impl DataKey {
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn generate() -> Result<DataKey, CryptoError> {
        let mut bytes = [0u8; 32];
        super::random_bytes(&mut bytes)?;
        Ok(DataKey(bytes))
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

/// The label a data key is wrapped under: binds the wrapped bytes to their version.
pub fn wrap_label(version: u32) -> Vec<u8> {
    format!("carewire/data-key/v{version}").into_bytes()
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = data_keys)]
struct DataKeyRow {
    version: i32,
    wrapped_key: Vec<u8>,
    kek_id: String,
    retired_at: Option<DateTime<Utc>>,
}

/// All data keys this server can use.
#[derive(Debug)]
pub struct Keyring {
    keys: BTreeMap<u32, DataKey>,
    current: u32,
}

impl Keyring {
    pub fn load_or_init(conn: &mut PgConnection, kek: &Kek) -> Result<Keyring, CryptoError> {
        let mut rows = load_rows(conn)?;
        if rows.is_empty() {
            let key = DataKey::generate()?;
            let wrapped = kek.wrap(&wrap_label(1), key.as_bytes())?;
            diesel::insert_into(data_keys::table)
                .values((
                    data_keys::version.eq(1),
                    data_keys::wrapped_key.eq(wrapped),
                    data_keys::kek_id.eq(kek.id()),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?;
            rows = load_rows(conn)?;
        }
        let mut keys = BTreeMap::new();
        let mut current = None;
        for row in rows {
            if row.retired_at.is_some() && row.wrapped_key.is_empty() {
                continue; // destroyed
            }
            if row.kek_id != kek.id() {
                return Err(CryptoError::WrongKek {
                    configured: kek.id(),
                    stored: row.kek_id,
                });
            }
            let version = u32::try_from(row.version).map_err(|_| CryptoError::Decrypt)?;
            let bytes = kek.unwrap_key(&wrap_label(version), &row.wrapped_key)?;
            let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| CryptoError::Decrypt)?;
            keys.insert(version, DataKey(array));
            if row.retired_at.is_none() {
                current = Some(version);
            }
        }
        let current = current.ok_or(CryptoError::UnknownKeyVersion(0))?;
        Ok(Keyring { keys, current })
    }

    /// The version and key new writes use.
    pub fn current(&self) -> (u32, &DataKey) {
        let key = &self.keys[&self.current];
        (self.current, key)
    }

    pub fn current_version(&self) -> u32 {
        self.current
    }

    pub fn get(&self, version: u32) -> Option<&DataKey> {
        self.keys.get(&version)
    }
}

/// Creates the next data key version (or finds that another process just did) and
/// returns the newest version.
pub fn create_version(conn: &mut PgConnection, kek: &Kek) -> Result<u32, CryptoError> {
    let newest: Option<i32> = data_keys::table
        .select(diesel::dsl::max(data_keys::version))
        .first(conn)?;
    let next = newest.unwrap_or(0) + 1;
    let key = DataKey::generate()?;
    let version = u32::try_from(next).map_err(|_| CryptoError::UnknownKeyVersion(0))?;
    diesel::insert_into(data_keys::table)
        .values((
            data_keys::version.eq(next),
            data_keys::wrapped_key.eq(kek.wrap(&wrap_label(version), key.as_bytes())?),
            data_keys::kek_id.eq(kek.id()),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    let newest: Option<i32> = data_keys::table
        .select(diesel::dsl::max(data_keys::version))
        .first(conn)?;
    Ok(u32::try_from(newest.unwrap_or(next)).unwrap_or(version))
}

/// Reserves `block` encryptions of `version`; returns the total reserved so far.
pub fn reserve_encryptions(conn: &mut PgConnection, version: u32, block: u64) -> Result<u64, CryptoError> {
    let total: i64 = diesel::update(data_keys::table.find(i32::try_from(version).unwrap_or(i32::MAX)))
        .set(data_keys::encryptions.eq(data_keys::encryptions + i64::try_from(block).unwrap_or(i64::MAX)))
        .returning(data_keys::encryptions)
        .get_result(conn)?;
    Ok(u64::try_from(total).unwrap_or(0))
}

fn load_rows(conn: &mut PgConnection) -> Result<Vec<DataKeyRow>, CryptoError> {
    Ok(data_keys::table
        .select(DataKeyRow::as_select())
        .order(data_keys::version.asc())
        .load(conn)?)
}
