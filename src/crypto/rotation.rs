//! Key rotation, for `carewire keys …`: all of it safe while servers run.
//!
//! - **rotate**: a new data key version; new writes everywhere use it within
//!   `CAREWIRE_KEYRING_REFRESH_SECS`, old versions still decrypt.
//! - **rewrap**: re-encrypts every sealed field still on an older version, in batches
//!   of rows locked for the batch, so a concurrent edit is never overwritten.
//!   Resumable: run it again and it only touches what is left.
//! - **retire**: destroys an old version's key, refusing while any field uses it or
//!   while instances may still be writing with it.
//! - **status**: versions, their encryption counts, and fields and rows per version.
//! - **rotate-kek**: rewraps every data key and the index root under a new KEK.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Integer, Nullable, Uuid as SqlUuid};
use uuid::Uuid;

use super::fields::{ENCRYPTED, EncryptedTable};
use super::keyring::{self, wrap_label};
use super::{Crypto, CryptoError, Kek, field};
use crate::schema::{data_keys, index_keys};

/// One data key version.
#[derive(Debug, Clone)]
pub struct VersionStatus {
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub encryptions: i64,
    pub fields: i64,
    pub rows: i64,
    pub current: bool,
}

#[derive(QueryableByName)]
struct VersionCount {
    #[diesel(sql_type = Integer)]
    version: i32,
    #[diesel(sql_type = BigInt)]
    fields: i64,
    #[diesel(sql_type = BigInt)]
    rows: i64,
}

/// The key version of a sealed column, in SQL (bytes 2 to 5 of the sealed value).
fn version_expr(column: &str) -> String {
    format!("('x' || encode(substring({column} from 2 for 4), 'hex'))::bit(32)::int")
}

/// Fields and rows per key version, across every encrypted column.
fn counts(conn: &mut PgConnection) -> QueryResult<Vec<VersionCount>> {
    let mut parts = Vec::new();
    for t in ENCRYPTED {
        for c in t.columns {
            parts.push(format!(
                "SELECT '{table}' AS tbl, {id}::text AS row_id, {v} AS version FROM {table} WHERE {c} IS NOT NULL",
                table = t.table,
                id = t.id_column,
                v = version_expr(c),
            ));
        }
    }
    let sql = format!(
        "SELECT version, count(*) AS fields, count(DISTINCT (tbl, row_id)) AS rows FROM ({}) f GROUP BY version",
        parts.join(" UNION ALL ")
    );
    diesel::sql_query(sql).load(conn)
}

#[derive(Queryable)]
struct KeyRow {
    version: i32,
    created_at: DateTime<Utc>,
    retired_at: Option<DateTime<Utc>>,
    encryptions: i64,
}

/// Every version, oldest first.
pub fn status(conn: &mut PgConnection) -> Result<Vec<VersionStatus>, CryptoError> {
    let keys: Vec<KeyRow> = data_keys::table
        .order(data_keys::version.asc())
        .select((
            data_keys::version,
            data_keys::created_at,
            data_keys::retired_at,
            data_keys::encryptions,
        ))
        .load(conn)?;
    let counts = counts(conn)?;
    let current = keys
        .iter()
        .filter(|k| k.retired_at.is_none())
        .map(|k| k.version)
        .max();
    Ok(keys
        .into_iter()
        .map(|k| {
            let c = counts.iter().find(|c| c.version == k.version);
            VersionStatus {
                version: u32::try_from(k.version).unwrap_or(0),
                created_at: k.created_at,
                retired_at: k.retired_at,
                encryptions: k.encryptions,
                fields: c.map_or(0, |c| c.fields),
                rows: c.map_or(0, |c| c.rows),
                current: Some(k.version) == current,
            }
        })
        .collect())
}

/// Creates a new data key version and switches this process to it.
pub fn rotate(crypto: &Crypto, conn: &mut PgConnection) -> Result<u32, CryptoError> {
    let version = keyring::create_version(conn, crypto.kek())?;
    crypto.refresh()?;
    Ok(version)
}

/// What a rewrap did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RewrapReport {
    pub rows_scanned: u64,
    pub rows_rewrapped: u64,
    pub fields_rewrapped: u64,
}

#[derive(QueryableByName)]
struct SealedRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Array<Nullable<Bytea>>)]
    values: Vec<Option<Vec<u8>>>,
}

/// Total rows in the encrypted tables, for progress.
pub fn rows_to_scan(conn: &mut PgConnection) -> QueryResult<u64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut total = 0u64;
    for t in ENCRYPTED {
        let c: Count =
            diesel::sql_query(format!("SELECT count(*) AS n FROM {}", t.table)).get_result(conn)?;
        total += u64::try_from(c.n).unwrap_or(0);
    }
    Ok(total)
}

/// Re-encrypts every field not on the current version, `batch` rows per transaction.
/// `progress` gets the rows scanned so far.
pub fn rewrap(
    crypto: &Crypto,
    conn: &mut PgConnection,
    batch: i64,
    mut progress: impl FnMut(u64),
) -> Result<RewrapReport, CryptoError> {
    crypto.refresh()?;
    let target = crypto.current_version();
    let mut report = RewrapReport::default();
    for table in ENCRYPTED {
        let mut after = Uuid::nil();
        loop {
            let (scanned, last) = conn
                .transaction(|conn| rewrap_batch(crypto, conn, table, target, after, batch, &mut report))?;
            report.rows_scanned += scanned;
            progress(report.rows_scanned);
            match last {
                Some(last) if scanned as i64 == batch => after = last,
                _ => break,
            }
        }
    }
    Ok(report)
}

fn rewrap_batch(
    crypto: &Crypto,
    conn: &mut PgConnection,
    table: &EncryptedTable,
    target: u32,
    after: Uuid,
    batch: i64,
    report: &mut RewrapReport,
) -> Result<(u64, Option<Uuid>), CryptoError> {
    let select = format!(
        "SELECT {id} AS id, ARRAY[{cols}] AS values FROM {table} WHERE {id} > $1 ORDER BY {id} LIMIT $2 FOR UPDATE",
        id = table.id_column,
        cols = table.columns.join(", "),
        table = table.table,
    );
    let rows: Vec<SealedRow> = diesel::sql_query(select)
        .bind::<SqlUuid, _>(after)
        .bind::<BigInt, _>(batch)
        .load(conn)?;
    let update = format!(
        "UPDATE {table} SET {sets} WHERE {id} = $1",
        table = table.table,
        id = table.id_column,
        sets = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = $2[{}]", i + 1))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for row in &rows {
        let mut changed = 0u64;
        let mut values = Vec::with_capacity(row.values.len());
        for (column, value) in table.columns.iter().zip(&row.values) {
            match value {
                Some(sealed) if field::key_version(sealed)? != target => {
                    let ctx = super::field(table.table, EncryptedTable::field_name(column), row.id);
                    let plaintext = crypto.decrypt(&ctx, sealed)?;
                    values.push(Some(crypto.encrypt(&ctx, &plaintext)?));
                    changed += 1;
                }
                other => values.push(other.clone()),
            }
        }
        if changed > 0 {
            diesel::sql_query(&update)
                .bind::<SqlUuid, _>(row.id)
                .bind::<Array<Nullable<Bytea>>, _>(values)
                .execute(conn)?;
            report.rows_rewrapped += 1;
            report.fields_rewrapped += changed;
        }
    }
    Ok((rows.len() as u64, rows.last().map(|r| r.id)))
}

/// Why a version cannot be retired.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    #[error("there is no data key version {0}")]
    Unknown(u32),
    #[error("version {0} is already retired")]
    AlreadyRetired(u32),
    #[error("version {0} is the current key: rotate first")]
    Current(u32),
    #[error("version {version} was current until {since} ago; wait {wait} s so every instance has switched")]
    TooRecent { version: u32, since: String, wait: i64 },
    #[error(
        "{fields} field(s) in {rows} row(s) still use version {version}: run `carewire keys rewrap` first"
    )]
    InUse { version: u32, fields: i64, rows: i64 },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Destroys the key of `version` (its wrapped bytes are erased), if nothing uses it
/// and it stopped being current more than `grace` ago.
pub fn retire(conn: &mut PgConnection, version: u32, grace: std::time::Duration) -> Result<(), RetireError> {
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::seconds(60));
    conn.transaction(|conn| {
        let v = i32::try_from(version).map_err(|_| RetireError::Unknown(version))?;
        // Serialise with rotations and other retirements.
        diesel::sql_query("LOCK TABLE data_keys IN SHARE ROW EXCLUSIVE MODE").execute(conn)?;
        let statuses = status(conn)?;
        let this = statuses
            .iter()
            .find(|s| s.version == version)
            .ok_or(RetireError::Unknown(version))?;
        if this.retired_at.is_some() {
            return Err(RetireError::AlreadyRetired(version));
        }
        if this.current {
            return Err(RetireError::Current(version));
        }
        if let Some(next) = statuses.iter().find(|s| s.version > version) {
            let since = Utc::now() - next.created_at;
            if since < grace {
                return Err(RetireError::TooRecent {
                    version,
                    since: format!("{} s", since.num_seconds()),
                    wait: (grace - since).num_seconds().max(1),
                });
            }
        }
        if this.fields > 0 {
            return Err(RetireError::InUse {
                version,
                fields: this.fields,
                rows: this.rows,
            });
        }
        diesel::update(data_keys::table.find(v))
            .set((
                data_keys::retired_at.eq(diesel::dsl::now),
                data_keys::wrapped_key.eq(Vec::<u8>::new()),
            ))
            .execute(conn)?;
        Ok(())
    })
}

/// Rewraps every data key and the index root from `old` to `new`, in one
/// transaction. Returns how many keys were rewrapped.
pub fn rotate_kek(conn: &mut PgConnection, old: &Kek, new: &Kek) -> Result<usize, CryptoError> {
    conn.transaction(|conn| {
        let rows: Vec<(i32, Vec<u8>, String)> = data_keys::table
            .select((data_keys::version, data_keys::wrapped_key, data_keys::kek_id))
            .for_update()
            .load(conn)?;
        let mut count = 0;
        for (version, wrapped, kek_id) in rows {
            if wrapped.is_empty() {
                continue; // retired and destroyed
            }
            if kek_id != old.id() {
                return Err(CryptoError::WrongKek {
                    configured: old.id(),
                    stored: kek_id,
                });
            }
            let label = wrap_label(u32::try_from(version).unwrap_or(0));
            let key = old.unwrap_key(&label, &wrapped)?;
            diesel::update(data_keys::table.find(version))
                .set((
                    data_keys::wrapped_key.eq(new.wrap(&label, &key)?),
                    data_keys::kek_id.eq(new.id()),
                ))
                .execute(conn)?;
            count += 1;
        }
        let (wrapped, kek_id): (Vec<u8>, String) = index_keys::table
            .select((index_keys::wrapped_key, index_keys::kek_id))
            .for_update()
            .first(conn)?;
        if kek_id != old.id() {
            return Err(CryptoError::WrongKek {
                configured: old.id(),
                stored: kek_id,
            });
        }
        let label = super::blind_index::WRAP_LABEL;
        let root = old.unwrap_key(label, &wrapped)?;
        diesel::update(index_keys::table)
            .set((
                index_keys::wrapped_key.eq(new.wrap(label, &root)?),
                index_keys::kek_id.eq(new.id()),
            ))
            .execute(conn)?;
        Ok(count + 1)
    })
}
