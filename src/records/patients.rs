//! Patient rows: demographics sealed field by field, blind indexes for exact-match
//! lookup, and reading them back.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use super::demographics::{Demographics, LegalName, Sex, normalize_family};
use crate::crypto::{BlindIndex, Crypto, CryptoError, FieldContext};
use crate::error::Error;
use crate::schema::patients;

/// 32-bit blind indexes: short enough that each value shares its index with others
/// in a large practice (so an index value does not single anyone out), long enough to
/// keep the candidates to decrypt few.
pub const EMAIL_INDEX: BlindIndex = BlindIndex::new("patients.email", 4);
pub const PHONE_INDEX: BlindIndex = BlindIndex::new("patients.phone", 4);
pub const MRN_INDEX: BlindIndex = BlindIndex::new("patients.mrn", 4);
pub const BIRTH_DATE_FAMILY_INDEX: BlindIndex = BlindIndex::new("patients.birth_date_family", 4);

const TABLE: &str = "patients";

fn ctx(column: &'static str, id: Uuid) -> FieldContext {
    crate::crypto::field(TABLE, column, id)
}

/// A stored patient.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = patients)]
pub struct PatientRow {
    pub id: Uuid,
    pub account_id: Option<Uuid>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i32,
    legal_given_name_enc: Vec<u8>,
    legal_family_name_enc: Vec<u8>,
    preferred_name_enc: Option<Vec<u8>>,
    birth_date_enc: Vec<u8>,
    sex_enc: Option<Vec<u8>>,
    gender_identity_enc: Option<Vec<u8>>,
    phone_enc: Option<Vec<u8>>,
    email_enc: Option<Vec<u8>>,
    address_enc: Option<Vec<u8>>,
    mrn_enc: Option<Vec<u8>>,
    insurance_id_enc: Option<Vec<u8>>,
    emergency_contact_enc: Option<Vec<u8>>,
}

impl std::fmt::Debug for PatientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientRow")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The sealed form of every field, and the blind indexes.
struct Sealed {
    given: Vec<u8>,
    family: Vec<u8>,
    preferred_name: Option<Vec<u8>>,
    birth_date: Vec<u8>,
    sex: Option<Vec<u8>>,
    gender_identity: Option<Vec<u8>>,
    phone: Option<Vec<u8>>,
    email: Option<Vec<u8>>,
    address: Option<Vec<u8>>,
    mrn: Option<Vec<u8>>,
    insurance_id: Option<Vec<u8>>,
    emergency_contact: Option<Vec<u8>>,
}

fn seal_opt(
    crypto: &Crypto,
    column: &'static str,
    id: Uuid,
    value: Option<&str>,
) -> Result<Option<Vec<u8>>, CryptoError> {
    value.map(|v| crypto.encrypt_str(&ctx(column, id), v)).transpose()
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn seal(crypto: &Crypto, id: Uuid, d: &Demographics) -> Result<Sealed, CryptoError> {
    Ok(Sealed {
        given: crypto.encrypt_str(&ctx("legal_given_name", id), &d.legal_name.given)?,
        family: crypto.encrypt_str(&ctx("legal_family_name", id), &d.legal_name.family)?,
        preferred_name: seal_opt(crypto, "preferred_name", id, d.preferred_name.as_deref())?,
        birth_date: crypto.encrypt_str(&ctx("birth_date", id), &d.birth_date.to_string())?,
        sex: seal_opt(crypto, "sex", id, d.sex.map(Sex::as_str))?,
        gender_identity: seal_opt(crypto, "gender_identity", id, d.gender_identity.as_deref())?,
        phone: seal_opt(crypto, "phone", id, d.phone.as_deref())?,
        email: seal_opt(crypto, "email", id, d.email.as_deref())?,
        address: seal_opt(crypto, "address", id, d.address.as_ref().map(json).as_deref())?,
        mrn: seal_opt(crypto, "mrn", id, d.mrn.as_deref())?,
        insurance_id: seal_opt(crypto, "insurance_id", id, d.insurance_id.as_deref())?,
        emergency_contact: seal_opt(
            crypto,
            "emergency_contact",
            id,
            d.emergency_contact.as_ref().map(json).as_deref(),
        )?,
    })
}

/// Blind index values of the matchable fields.
struct Indexes {
    email: Option<Vec<u8>>,
    phone: Option<Vec<u8>>,
    mrn: Option<Vec<u8>>,
    birth_date_family: Vec<u8>,
}

fn birth_date_family_key(birth_date: NaiveDate, family: &str) -> String {
    format!("{birth_date}|{}", normalize_family(family))
}

fn indexes(crypto: &Crypto, d: &Demographics) -> Indexes {
    Indexes {
        email: d
            .email
            .as_ref()
            .map(|e| crypto.blind_index(&EMAIL_INDEX, e.as_bytes())),
        phone: d
            .phone
            .as_ref()
            .map(|p| crypto.blind_index(&PHONE_INDEX, p.as_bytes())),
        mrn: d
            .mrn
            .as_ref()
            .map(|m| crypto.blind_index(&MRN_INDEX, m.as_bytes())),
        birth_date_family: crypto.blind_index(
            &BIRTH_DATE_FAMILY_INDEX,
            birth_date_family_key(d.birth_date, &d.legal_name.family).as_bytes(),
        ),
    }
}

fn open_opt(
    crypto: &Crypto,
    column: &'static str,
    id: Uuid,
    sealed: &Option<Vec<u8>>,
) -> Result<Option<String>, CryptoError> {
    sealed
        .as_ref()
        .map(|s| crypto.decrypt_string(&ctx(column, id), s).map(|v| v.to_string()))
        .transpose()
}

fn from_json<T: serde::de::DeserializeOwned>(value: Option<String>) -> Result<Option<T>, CryptoError> {
    value
        .map(|v| serde_json::from_str(&v).map_err(|_| CryptoError::Decrypt))
        .transpose()
}

/// Decrypts every field of a row.
pub fn open(crypto: &Crypto, row: &PatientRow) -> Result<Demographics, CryptoError> {
    let id = row.id;
    let birth_date = crypto.decrypt_string(&ctx("birth_date", id), &row.birth_date_enc)?;
    Ok(Demographics {
        legal_name: LegalName {
            given: crypto
                .decrypt_string(&ctx("legal_given_name", id), &row.legal_given_name_enc)?
                .to_string(),
            family: crypto
                .decrypt_string(&ctx("legal_family_name", id), &row.legal_family_name_enc)?
                .to_string(),
        },
        preferred_name: open_opt(crypto, "preferred_name", id, &row.preferred_name_enc)?,
        birth_date: birth_date.parse().map_err(|_| CryptoError::Decrypt)?,
        sex: open_opt(crypto, "sex", id, &row.sex_enc)?
            .map(|s| Sex::parse(&s).ok_or(CryptoError::Decrypt))
            .transpose()?,
        gender_identity: open_opt(crypto, "gender_identity", id, &row.gender_identity_enc)?,
        phone: open_opt(crypto, "phone", id, &row.phone_enc)?,
        email: open_opt(crypto, "email", id, &row.email_enc)?,
        address: from_json(open_opt(crypto, "address", id, &row.address_enc)?)?,
        mrn: open_opt(crypto, "mrn", id, &row.mrn_enc)?,
        insurance_id: open_opt(crypto, "insurance_id", id, &row.insurance_id_enc)?,
        emergency_contact: from_json(open_opt(
            crypto,
            "emergency_contact",
            id,
            &row.emergency_contact_enc,
        )?)?,
    })
}

/// Creates a patient. A patient's own account can hold only one record (409).
pub fn create(
    conn: &mut PgConnection,
    crypto: &Crypto,
    account_id: Option<Uuid>,
    created_by: Uuid,
    d: &Demographics,
) -> Result<PatientRow, Error> {
    let id = Uuid::now_v7();
    let s = seal(crypto, id, d)?;
    let ix = indexes(crypto, d);
    let inserted = diesel::insert_into(patients::table)
        .values((
            patients::id.eq(id),
            patients::account_id.eq(account_id),
            patients::created_by.eq(created_by),
            patients::legal_given_name_enc.eq(s.given),
            patients::legal_family_name_enc.eq(s.family),
            patients::preferred_name_enc.eq(s.preferred_name),
            patients::birth_date_enc.eq(s.birth_date),
            patients::sex_enc.eq(s.sex),
            patients::gender_identity_enc.eq(s.gender_identity),
            patients::phone_enc.eq(s.phone),
            patients::email_enc.eq(s.email),
            patients::address_enc.eq(s.address),
            patients::mrn_enc.eq(s.mrn),
            patients::insurance_id_enc.eq(s.insurance_id),
            patients::emergency_contact_enc.eq(s.emergency_contact),
            patients::email_bidx.eq(ix.email),
            patients::phone_bidx.eq(ix.phone),
            patients::mrn_bidx.eq(ix.mrn),
            patients::birth_date_family_bidx.eq(ix.birth_date_family),
        ))
        .returning(PatientRow::as_returning())
        .get_result(conn);
    match inserted {
        Ok(row) => Ok(row),
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {
            Err(Error::conflict(
                "patient_record_exists",
                "this account already has a patient record",
            ))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn load(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<PatientRow>> {
    patients::table
        .find(id)
        .select(PatientRow::as_select())
        .first(conn)
        .optional()
}

/// Writes `new` over `old` if the row is still at `expected_version`; only changed
/// fields are re-sealed. `None` when the row moved on (the caller answers 412).
pub fn update(
    conn: &mut PgConnection,
    crypto: &Crypto,
    row: &PatientRow,
    expected_version: i32,
    old: &Demographics,
    new: &Demographics,
) -> Result<Option<PatientRow>, Error> {
    let id = row.id;
    let s = seal_changed(crypto, id, old, new)?;
    let ix = indexes(crypto, new);
    Ok(diesel::update(
        patients::table
            .find(id)
            .filter(patients::version.eq(expected_version)),
    )
    .set((
        s,
        patients::email_bidx.eq(ix.email),
        patients::phone_bidx.eq(ix.phone),
        patients::mrn_bidx.eq(ix.mrn),
        patients::birth_date_family_bidx.eq(ix.birth_date_family),
        patients::version.eq(patients::version + 1),
        patients::updated_at.eq(diesel::dsl::now),
    ))
    .returning(PatientRow::as_returning())
    .get_result(conn)
    .optional()?)
}

/// Changed fields only: `None` leaves a column alone, `Some(None)` clears it.
#[derive(AsChangeset)]
#[diesel(table_name = patients)]
struct ChangedFields {
    legal_given_name_enc: Option<Vec<u8>>,
    legal_family_name_enc: Option<Vec<u8>>,
    preferred_name_enc: Option<Option<Vec<u8>>>,
    birth_date_enc: Option<Vec<u8>>,
    sex_enc: Option<Option<Vec<u8>>>,
    gender_identity_enc: Option<Option<Vec<u8>>>,
    phone_enc: Option<Option<Vec<u8>>>,
    email_enc: Option<Option<Vec<u8>>>,
    address_enc: Option<Option<Vec<u8>>>,
    mrn_enc: Option<Option<Vec<u8>>>,
    insurance_id_enc: Option<Option<Vec<u8>>>,
    emergency_contact_enc: Option<Option<Vec<u8>>>,
}

fn seal_changed(
    crypto: &Crypto,
    id: Uuid,
    old: &Demographics,
    new: &Demographics,
) -> Result<ChangedFields, CryptoError> {
    fn if_changed<T: PartialEq>(
        a: &T,
        b: &T,
        seal: impl FnOnce() -> Result<Option<Vec<u8>>, CryptoError>,
    ) -> Result<Option<Option<Vec<u8>>>, CryptoError> {
        if a == b { Ok(None) } else { seal().map(Some) }
    }
    let required =
        |changed: bool, column: &'static str, value: &str| -> Result<Option<Vec<u8>>, CryptoError> {
            if changed {
                crypto.encrypt_str(&ctx(column, id), value).map(Some)
            } else {
                Ok(None)
            }
        };
    Ok(ChangedFields {
        legal_given_name_enc: required(
            old.legal_name.given != new.legal_name.given,
            "legal_given_name",
            &new.legal_name.given,
        )?,
        legal_family_name_enc: required(
            old.legal_name.family != new.legal_name.family,
            "legal_family_name",
            &new.legal_name.family,
        )?,
        preferred_name_enc: if_changed(&old.preferred_name, &new.preferred_name, || {
            seal_opt(crypto, "preferred_name", id, new.preferred_name.as_deref())
        })?,
        birth_date_enc: required(
            old.birth_date != new.birth_date,
            "birth_date",
            &new.birth_date.to_string(),
        )?,
        sex_enc: if_changed(&old.sex, &new.sex, || {
            seal_opt(crypto, "sex", id, new.sex.map(Sex::as_str))
        })?,
        gender_identity_enc: if_changed(&old.gender_identity, &new.gender_identity, || {
            seal_opt(crypto, "gender_identity", id, new.gender_identity.as_deref())
        })?,
        phone_enc: if_changed(&old.phone, &new.phone, || {
            seal_opt(crypto, "phone", id, new.phone.as_deref())
        })?,
        email_enc: if_changed(&old.email, &new.email, || {
            seal_opt(crypto, "email", id, new.email.as_deref())
        })?,
        address_enc: if_changed(&old.address, &new.address, || {
            seal_opt(crypto, "address", id, new.address.as_ref().map(json).as_deref())
        })?,
        mrn_enc: if_changed(&old.mrn, &new.mrn, || {
            seal_opt(crypto, "mrn", id, new.mrn.as_deref())
        })?,
        insurance_id_enc: if_changed(&old.insurance_id, &new.insurance_id, || {
            seal_opt(crypto, "insurance_id", id, new.insurance_id.as_deref())
        })?,
        emergency_contact_enc: if_changed(&old.emergency_contact, &new.emergency_contact, || {
            seal_opt(
                crypto,
                "emergency_contact",
                id,
                new.emergency_contact.as_ref().map(json).as_deref(),
            )
        })?,
    })
}

/// What to look a patient up by.
#[derive(Clone)]
pub enum Lookup {
    Email(String),
    Phone(String),
    Mrn(String),
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Lookup::Email(_) => "Email",
            Lookup::Phone(_) => "Phone",
            Lookup::Mrn(_) => "Mrn",
        };
        write!(f, "Lookup::{kind}([redacted])")
    }
}

/// Patients whose field equals the lookup value exactly: candidates by blind index,
/// confirmed after decryption.
pub fn search(
    conn: &mut PgConnection,
    crypto: &Crypto,
    lookup: &Lookup,
) -> Result<Vec<(PatientRow, Demographics)>, Error> {
    let candidates: Vec<PatientRow> = match lookup {
        Lookup::Email(v) => patients::table
            .filter(patients::email_bidx.eq(crypto.blind_index(&EMAIL_INDEX, v.as_bytes())))
            .select(PatientRow::as_select())
            .load(conn)?,
        Lookup::Phone(v) => patients::table
            .filter(patients::phone_bidx.eq(crypto.blind_index(&PHONE_INDEX, v.as_bytes())))
            .select(PatientRow::as_select())
            .load(conn)?,
        Lookup::Mrn(v) => patients::table
            .filter(patients::mrn_bidx.eq(crypto.blind_index(&MRN_INDEX, v.as_bytes())))
            .select(PatientRow::as_select())
            .load(conn)?,
    };
    let mut found = Vec::new();
    for row in candidates {
        let d = open(crypto, &row)?;
        let matches = match lookup {
            Lookup::Email(v) => d.email.as_deref() == Some(v.as_str()),
            Lookup::Phone(v) => d.phone.as_deref() == Some(v.as_str()),
            Lookup::Mrn(v) => d.mrn.as_deref() == Some(v.as_str()),
        };
        if matches {
            found.push((row, d));
        }
    }
    Ok(found)
}

/// What the API shows of a patient.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PatientView {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<Uuid>,
    #[serde(flatten)]
    pub demographics: Demographics,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl crate::http::etag::Versioned for PatientView {
    fn version(&self) -> i32 {
        self.version
    }
}

impl std::fmt::Debug for PatientView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientView")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

pub fn view(row: &PatientRow, demographics: Demographics) -> PatientView {
    PatientView {
        id: row.id,
        account_id: row.account_id,
        demographics,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}
