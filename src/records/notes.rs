//! Clinical notes (subjective, objective, assessment, plan), versioned.
//!
//! A note starts as a draft; each edit adds a version and the old ones stay readable.
//! Signing locks it; after that only amendments are possible, each a new version
//! again. Every version's sections are sealed, bound to that version's row.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::{Crypto, CryptoError, FieldContext};
use crate::error::Error;
use crate::schema::{clinical_note_versions, clinical_notes};

const VERSIONS: &str = "clinical_note_versions";
/// Longest section, in characters.
pub const MAX_SECTION: usize = 20_000;

/// The four sections. Its `Debug` shows nothing.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Content {
    #[serde(default)]
    pub subjective: Option<String>,
    #[serde(default)]
    pub objective: Option<String>,
    #[serde(default)]
    pub assessment: Option<String>,
    #[serde(default)]
    pub plan: Option<String>,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Content([redacted])")
    }
}

impl Content {
    pub fn validated(self) -> Result<Content, Error> {
        let sections = [
            ("subjective", &self.subjective),
            ("objective", &self.objective),
            ("assessment", &self.assessment),
            ("plan", &self.plan),
        ];
        if sections
            .iter()
            .all(|(_, s)| s.as_deref().is_none_or(|s| s.trim().is_empty()))
        {
            return Err(Error::validation(
                "subjective",
                "a note needs at least one section",
            ));
        }
        for (name, section) in sections {
            if let Some(section) = section.as_deref() {
                crate::text::check(name, section, crate::text::Rules::prose(MAX_SECTION).at_least(0))?;
            }
        }
        Ok(self)
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = clinical_notes)]
pub struct NoteRow {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub author_id: Uuid,
    pub appointment_id: Option<Uuid>,
    pub status: String,
    pub current_version: i32,
    pub signed_at: Option<DateTime<Utc>>,
    pub signed_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl NoteRow {
    pub fn is_signed(&self) -> bool {
        self.status == "signed"
    }
}

#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = clinical_note_versions)]
pub struct VersionRow {
    pub id: Uuid,
    pub note_id: Uuid,
    pub version: i32,
    pub kind: String,
    pub author_id: Uuid,
    pub created_at: DateTime<Utc>,
    subjective_enc: Option<Vec<u8>>,
    objective_enc: Option<Vec<u8>>,
    assessment_enc: Option<Vec<u8>>,
    plan_enc: Option<Vec<u8>>,
}

impl std::fmt::Debug for VersionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionRow")
            .field("note_id", &self.note_id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn ctx(column: &'static str, version_id: Uuid) -> FieldContext {
    crate::crypto::field(VERSIONS, column, version_id)
}

fn seal(
    crypto: &Crypto,
    id: Uuid,
    column: &'static str,
    value: &Option<String>,
) -> Result<Option<Vec<u8>>, CryptoError> {
    value
        .as_deref()
        .map(|v| crypto.encrypt_str(&ctx(column, id), v))
        .transpose()
}

fn open_section(
    crypto: &Crypto,
    id: Uuid,
    column: &'static str,
    sealed: &Option<Vec<u8>>,
) -> Result<Option<String>, CryptoError> {
    sealed
        .as_ref()
        .map(|s| crypto.decrypt_string(&ctx(column, id), s).map(|v| v.to_string()))
        .transpose()
}

/// Decrypts a version's sections.
pub fn open(crypto: &Crypto, version: &VersionRow) -> Result<Content, CryptoError> {
    Ok(Content {
        subjective: open_section(crypto, version.id, "subjective", &version.subjective_enc)?,
        objective: open_section(crypto, version.id, "objective", &version.objective_enc)?,
        assessment: open_section(crypto, version.id, "assessment", &version.assessment_enc)?,
        plan: open_section(crypto, version.id, "plan", &version.plan_enc)?,
    })
}

fn insert_version(
    conn: &mut PgConnection,
    crypto: &Crypto,
    note_id: Uuid,
    version: i32,
    kind: &str,
    author: Uuid,
    content: &Content,
) -> Result<VersionRow, Error> {
    let id = Uuid::now_v7();
    Ok(diesel::insert_into(clinical_note_versions::table)
        .values((
            clinical_note_versions::id.eq(id),
            clinical_note_versions::note_id.eq(note_id),
            clinical_note_versions::version.eq(version),
            clinical_note_versions::kind.eq(kind),
            clinical_note_versions::author_id.eq(author),
            clinical_note_versions::subjective_enc.eq(seal(crypto, id, "subjective", &content.subjective)?),
            clinical_note_versions::objective_enc.eq(seal(crypto, id, "objective", &content.objective)?),
            clinical_note_versions::assessment_enc.eq(seal(crypto, id, "assessment", &content.assessment)?),
            clinical_note_versions::plan_enc.eq(seal(crypto, id, "plan", &content.plan)?),
        ))
        .returning(VersionRow::as_returning())
        .get_result(conn)?)
}

/// Starts a note as draft version 1.
pub fn create(
    conn: &mut PgConnection,
    crypto: &Crypto,
    patient_id: Uuid,
    author: Uuid,
    appointment_id: Option<Uuid>,
    content: &Content,
) -> Result<(NoteRow, VersionRow), Error> {
    let id = Uuid::now_v7();
    let note = diesel::insert_into(clinical_notes::table)
        .values((
            clinical_notes::id.eq(id),
            clinical_notes::patient_id.eq(patient_id),
            clinical_notes::author_id.eq(author),
            clinical_notes::appointment_id.eq(appointment_id),
            clinical_notes::status.eq("draft"),
            clinical_notes::current_version.eq(1),
        ))
        .returning(NoteRow::as_returning())
        .get_result(conn)
        .map_err(|e| match &e {
            // The link is a foreign key over (appointment, patient): another
            // patient's appointment, or none, is refused by the database itself.
            diesel::result::Error::DatabaseError(_, info)
                if info.constraint_name() == Some("clinical_notes_appointment_fk") =>
            {
                Error::validation("appointment_id", "is not an appointment of this patient")
            }
            _ => e.into(),
        })?;
    let version = insert_version(conn, crypto, id, 1, "draft", author, content)?;
    Ok((note, version))
}

/// The note, if it belongs to the patient.
pub fn load(conn: &mut PgConnection, patient_id: Uuid, note_id: Uuid) -> QueryResult<Option<NoteRow>> {
    clinical_notes::table
        .find(note_id)
        .filter(clinical_notes::patient_id.eq(patient_id))
        .select(NoteRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

pub fn version(conn: &mut PgConnection, note_id: Uuid, version: i32) -> QueryResult<VersionRow> {
    clinical_note_versions::table
        .filter(clinical_note_versions::note_id.eq(note_id))
        .filter(clinical_note_versions::version.eq(version))
        .select(VersionRow::as_select())
        .first(conn)
}

pub fn versions(conn: &mut PgConnection, note_id: Uuid) -> QueryResult<Vec<VersionRow>> {
    clinical_note_versions::table
        .filter(clinical_note_versions::note_id.eq(note_id))
        .order(clinical_note_versions::version.asc())
        .select(VersionRow::as_select())
        .load(conn)
}

/// The patient's notes with their current versions, oldest first.
pub fn list(
    conn: &mut PgConnection,
    patient_id: Uuid,
    signed_only: bool,
) -> QueryResult<Vec<(NoteRow, VersionRow)>> {
    let mut query = clinical_notes::table
        .inner_join(
            clinical_note_versions::table.on(clinical_note_versions::note_id
                .eq(clinical_notes::id)
                .and(clinical_note_versions::version.eq(clinical_notes::current_version))),
        )
        .filter(clinical_notes::patient_id.eq(patient_id))
        .select((NoteRow::as_select(), VersionRow::as_select()))
        .order(clinical_notes::created_at.asc())
        .into_boxed();
    if signed_only {
        query = query.filter(clinical_notes::status.eq("signed"));
    }
    query.load(conn)
}

/// Adds a version to `note` (draft edit or amendment) and makes it current.
pub fn add_version(
    conn: &mut PgConnection,
    crypto: &Crypto,
    note: &NoteRow,
    kind: &str,
    author: Uuid,
    content: &Content,
) -> Result<(NoteRow, VersionRow), Error> {
    let next = note.current_version + 1;
    let version = insert_version(conn, crypto, note.id, next, kind, author, content)?;
    let note = diesel::update(clinical_notes::table.find(note.id))
        .set((
            clinical_notes::current_version.eq(next),
            clinical_notes::updated_at.eq(diesel::dsl::now),
        ))
        .returning(NoteRow::as_returning())
        .get_result(conn)?;
    Ok((note, version))
}

/// Signs a draft.
pub fn sign(conn: &mut PgConnection, note: &NoteRow, signer: Uuid) -> QueryResult<NoteRow> {
    diesel::update(clinical_notes::table.find(note.id))
        .set((
            clinical_notes::status.eq("signed"),
            clinical_notes::signed_at.eq(diesel::dsl::now),
            clinical_notes::signed_by.eq(Some(signer)),
            clinical_notes::updated_at.eq(diesel::dsl::now),
        ))
        .returning(NoteRow::as_returning())
        .get_result(conn)
}

/// A note as the API shows it, with the content of its current version.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NoteView {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub author_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appointment_id: Option<Uuid>,
    pub status: String,
    pub version: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub content: Content,
}

impl crate::http::etag::Versioned for NoteView {
    fn version(&self) -> i32 {
        self.version
    }
}

impl std::fmt::Debug for NoteView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteView")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

pub fn view(note: NoteRow, content: Content) -> NoteView {
    NoteView {
        id: note.id,
        patient_id: note.patient_id,
        author_id: note.author_id,
        appointment_id: note.appointment_id,
        status: note.status,
        version: note.current_version,
        signed_at: note.signed_at,
        signed_by: note.signed_by,
        created_at: note.created_at,
        updated_at: note.updated_at,
        content,
    }
}

/// One version as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VersionView {
    pub version: i32,
    pub kind: String,
    pub author_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub content: Content,
}

impl std::fmt::Debug for VersionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionView")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

pub fn version_view(row: &VersionRow, content: Content) -> VersionView {
    VersionView {
        version: row.version,
        kind: row.kind.clone(),
        author_id: row.author_id,
        created_at: row.created_at,
        content,
    }
}
