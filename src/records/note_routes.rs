//! Clinical note routes. Providers with access write and read; patients read their
//! own signed notes; admins never read notes.

use diesel::pg::PgConnection;
use http::StatusCode;
use serde::Deserialize;
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::access::Operation;
use super::notes::{self, Content, NoteRow, VersionRow};
use super::{Access, RecordsError, fields, guarded};
use crate::audit::{self, Code, DetailValue, action, resource};
use crate::context::RequestContext;
use crate::context::{Caller, Role};
use crate::error::Error;
use crate::http::etag::{self, IfMatch};
use crate::http::openapi::problems;
use crate::http::{body, reply, request_context, with_state};
use crate::state::AppState;

pub fn routes(state: &AppState) -> BoxedFilter<(Response,)> {
    create(state)
        .or(list(state))
        .unify()
        .or(read(state))
        .unify()
        .or(edit(state))
        .unify()
        .or(versions(state))
        .unify()
        .or(sign(state))
        .unify()
        .or(amend(state))
        .unify()
        .boxed()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewNote {
    #[serde(default)]
    appointment_id: Option<Uuid>,
    #[serde(flatten)]
    content: Content,
}

fn note_event(access: &Access, action: Code, note_id: Uuid) -> audit::AuditEvent {
    access
        .event(action, resource::NOTE, fields::NOTES)
        .resource(note_id)
}

/// A note the caller may see: patients see only signed notes (a draft is "not found").
fn visible(access: &Access, note: Option<NoteRow>) -> Result<NoteRow, RecordsError> {
    match note {
        Some(note) if !access.grant.own_record || note.is_signed() => Ok(note),
        _ => Err(RecordsError::Other(Error::NotFound)),
    }
}

/// Runs `work` on note `note_id` of patient `patient_id` once `operation` on the
/// patient's notes is granted and the note is one the caller may see (a patient's
/// view of a draft is "not found"), in the same transaction.
async fn with_note<T, F>(
    state: &AppState,
    ctx: &RequestContext,
    caller: Caller,
    (patient_id, note_id): (Uuid, Uuid),
    operation: Operation,
    work: F,
) -> Result<T, Error>
where
    F: FnOnce(&mut PgConnection, &AppState, &Access, NoteRow) -> Result<T, RecordsError> + Send + 'static,
    T: Send + 'static,
{
    guarded(
        state,
        ctx,
        caller,
        patient_id,
        operation,
        fields::NOTES,
        move |conn, state, access| {
            let note = visible(access, notes::load(conn, patient_id, note_id)?)?;
            work(conn, state, access, note)
        },
    )
    .await
}

/// Only the author changes their note.
fn authored(access: &Access, note: &NoteRow) -> Result<(), RecordsError> {
    if note.author_id == access.caller.account_id {
        Ok(())
    } else {
        let denial = audit::Denial::refused(
            resource::NOTE,
            Code::new("not_note_author"),
            "Only the note's author can change it.",
        )
        .resource(note.id)
        .patient(access.patient.id)
        .detail(Code::new("fields"), DetailValue::Code(fields::NOTES));
        Err(RecordsError::Denied(Box::new(denial)))
    }
}

/// POST /v1/patients/{id}/notes: a provider starts a note (draft version 1).
#[utoipa::path(post, path = "/v1/patients/{id}/notes", tag = "notes", params(("id" = uuid::Uuid, Path, description = "Patient id")), request_body = NewNote, responses((status = 201, description = "Draft version 1", body = super::notes::NoteView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn create(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients" / Uuid / "notes")
        .and(warp::post())
        .and(crate::access::with_role(state, &[Role::Provider]))
        .and(request_context())
        .and(body::json::<NewNote>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_create)
        .boxed()
}

async fn on_create(
    patient_id: Uuid,
    caller: Caller,
    ctx: RequestContext,
    input: NewNote,
    state: AppState,
) -> Response {
    let result = async {
        let content = input.content.validated()?;
        guarded(
            &state,
            &ctx,
            caller,
            patient_id,
            Operation::WriteNotes,
            fields::NOTES,
            move |conn, state, access| {
                let (note, _) = notes::create(
                    conn,
                    &state.crypto,
                    patient_id,
                    caller.account_id,
                    input.appointment_id,
                    &content,
                )?;
                audit::record(conn, &note_event(access, action::CREATE, note.id))?;
                Ok(notes::view(note, content))
            },
        )
        .await
    }
    .await;
    reply::respond(result.map(|view| etag::json(StatusCode::CREATED, &view)))
}

/// GET /v1/patients/{id}/notes: the patient's notes with their current content.
#[utoipa::path(get, path = "/v1/patients/{id}/notes", tag = "notes", params(("id" = uuid::Uuid, Path, description = "Patient id")), responses((status = 200, description = "Notes with current content", body = crate::http::openapi::Items<super::notes::NoteView>), problems::Unauthorized, problems::Forbidden, problems::NotFound), security(("bearer" = [])))]
pub(crate) fn list(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients" / Uuid / "notes")
        .and(warp::get())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(with_state(state))
        .then(on_list)
        .boxed()
}

async fn on_list(patient_id: Uuid, caller: Caller, ctx: RequestContext, state: AppState) -> Response {
    let result = guarded(
        &state,
        &ctx,
        caller,
        patient_id,
        Operation::ReadNotes,
        fields::NOTES,
        move |conn, state, access| {
            let rows = notes::list(conn, patient_id, access.grant.own_record)?;
            let mut views = Vec::with_capacity(rows.len());
            for (note, version) in rows {
                let content = notes::open(&state.crypto, &version)?;
                views.push(notes::view(note, content));
            }
            audit::record(
                conn,
                &access
                    .event(action::READ, resource::NOTE, fields::NOTES)
                    .detail(Code::new("results"), DetailValue::Count(views.len() as i64)),
            )?;
            Ok(views)
        },
    )
    .await;
    reply::respond(result.map(|items| reply::json(StatusCode::OK, &serde_json::json!({ "items": items }))))
}

/// GET /v1/patients/{id}/notes/{note_id}: one note, current content, with its ETag.
#[utoipa::path(get, path = "/v1/patients/{id}/notes/{note_id}", tag = "notes", params(("id" = uuid::Uuid, Path, description = "Patient id"), ("note_id" = uuid::Uuid, Path, description = "Note id")), responses((status = 200, description = "The note", body = super::notes::NoteView), problems::Unauthorized, problems::Forbidden, problems::NotFound), security(("bearer" = [])))]
pub(crate) fn read(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients" / Uuid / "notes" / Uuid)
        .and(warp::get())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(with_state(state))
        .then(on_read)
        .boxed()
}

async fn on_read(
    patient_id: Uuid,
    note_id: Uuid,
    caller: Caller,
    ctx: RequestContext,
    state: AppState,
) -> Response {
    let result = with_note(
        &state,
        &ctx,
        caller,
        (patient_id, note_id),
        Operation::ReadNotes,
        move |conn, state, access, note| {
            let version = notes::version(conn, note.id, note.current_version)?;
            let content = notes::open(&state.crypto, &version)?;
            audit::record(conn, &note_event(access, action::READ, note.id))?;
            Ok(notes::view(note, content))
        },
    )
    .await;
    reply::respond(result.map(|view| etag::json(StatusCode::OK, &view)))
}

/// PUT /v1/patients/{id}/notes/{note_id}: the author edits a draft; the edit is a new
/// version and the old one stays readable. Needs `If-Match`.
#[utoipa::path(put, path = "/v1/patients/{id}/notes/{note_id}", tag = "notes", params(("id" = uuid::Uuid, Path, description = "Patient id"), ("note_id" = uuid::Uuid, Path, description = "Note id"), ("If-Match" = String, Header, description = "The ETag you read")), request_body = Content, responses((status = 200, description = "A new draft version", body = super::notes::NoteView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict, problems::IfMatchRefused), security(("bearer" = [])))]
pub(crate) fn edit(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients" / Uuid / "notes" / Uuid)
        .and(warp::put())
        .and(crate::access::with_role(state, &[Role::Provider]))
        .and(request_context())
        .and(etag::if_match())
        .and(body::json::<Content>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(
            |patient_id, note_id, caller, ctx, if_match, input, state| async move {
                let target = (patient_id, note_id);
                revise(target, Revision::Draft(if_match), caller, ctx, input, state).await
            },
        )
        .boxed()
}

/// How a note gets a new version.
#[derive(Debug, Clone, Copy)]
enum Revision {
    /// Its author edits the draft, at the version they read.
    Draft(IfMatch),
    /// A provider with access amends the signed note.
    Amendment,
}

impl Revision {
    /// Whether this revision may be made to `note` by the holder of `access`.
    fn allowed(self, access: &Access, note: &NoteRow) -> Result<(), RecordsError> {
        match self {
            Revision::Draft(if_match) => {
                authored(access, note)?;
                if note.is_signed() {
                    return Err(RecordsError::Other(Error::conflict(
                        "note_signed",
                        "the note is signed; add an amendment instead",
                    )));
                }
                if_match.check(note.current_version)?;
            }
            Revision::Amendment if !note.is_signed() => {
                return Err(RecordsError::Other(Error::conflict(
                    "note_not_signed",
                    "only a signed note takes amendments; edit the draft instead",
                )));
            }
            Revision::Amendment => {}
        }
        Ok(())
    }
}

/// Adds a version to a note (a draft edit: 200; an amendment: 201), with its audit
/// event, once the rules of [`Revision::allowed`] and of access allow it.
async fn revise(
    (patient_id, note_id): (Uuid, Uuid),
    revision: Revision,
    caller: Caller,
    ctx: RequestContext,
    input: Content,
    state: AppState,
) -> Response {
    let result = async {
        let content = input.validated()?;
        with_note(
            &state,
            &ctx,
            caller,
            (patient_id, note_id),
            Operation::WriteNotes,
            move |conn, state, access, note| {
                revision.allowed(access, &note)?;
                let (kind, event) = match revision {
                    Revision::Draft(_) => ("draft", note_event(access, action::UPDATE, note.id)),
                    Revision::Amendment => (
                        "amendment",
                        note_event(access, action::UPDATE, note.id)
                            .detail(Code::new("change"), DetailValue::Code(Code::new("amended"))),
                    ),
                };
                let (note, _) =
                    notes::add_version(conn, &state.crypto, &note, kind, caller.account_id, &content)?;
                audit::record(conn, &event)?;
                Ok(notes::view(note, content))
            },
        )
        .await
    }
    .await;
    let status = match revision {
        Revision::Draft(_) => StatusCode::OK,
        Revision::Amendment => StatusCode::CREATED,
    };
    reply::respond(result.map(|view| etag::json(status, &view)))
}

/// GET /v1/patients/{id}/notes/{note_id}/versions: every version, oldest first
/// (patients see the signed version and the amendments after it).
#[utoipa::path(get, path = "/v1/patients/{id}/notes/{note_id}/versions", tag = "notes", params(("id" = uuid::Uuid, Path, description = "Patient id"), ("note_id" = uuid::Uuid, Path, description = "Note id")), responses((status = 200, description = "Every version", body = crate::http::openapi::Items<super::notes::VersionView>), problems::Unauthorized, problems::Forbidden, problems::NotFound), security(("bearer" = [])))]
pub(crate) fn versions(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients" / Uuid / "notes" / Uuid / "versions")
        .and(warp::get())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(with_state(state))
        .then(on_versions)
        .boxed()
}

async fn on_versions(
    patient_id: Uuid,
    note_id: Uuid,
    caller: Caller,
    ctx: RequestContext,
    state: AppState,
) -> Response {
    let result = with_note(
        &state,
        &ctx,
        caller,
        (patient_id, note_id),
        Operation::ReadNotes,
        move |conn, state, access, note| {
            let mut rows: Vec<VersionRow> = notes::versions(conn, note.id)?;
            if access.grant.own_record {
                // The last draft is the version that was signed; earlier drafts were
                // work in progress.
                let signed = rows
                    .iter()
                    .filter(|v| v.kind == "draft")
                    .map(|v| v.version)
                    .max()
                    .unwrap_or(0);
                rows.retain(|v| v.version >= signed);
            }
            let mut views = Vec::with_capacity(rows.len());
            for row in &rows {
                views.push(notes::version_view(row, notes::open(&state.crypto, row)?));
            }
            audit::record(
                conn,
                &note_event(access, action::READ, note.id)
                    .detail(Code::new("versions"), DetailValue::Count(views.len() as i64)),
            )?;
            Ok(views)
        },
    )
    .await;
    reply::respond(result.map(|items| reply::json(StatusCode::OK, &serde_json::json!({ "items": items }))))
}

/// POST /v1/patients/{id}/notes/{note_id}/sign: the author signs the current draft,
/// locking it. Needs `If-Match`, so what is signed is what was read.
#[utoipa::path(post, path = "/v1/patients/{id}/notes/{note_id}/sign", tag = "notes", params(("id" = uuid::Uuid, Path, description = "Patient id"), ("note_id" = uuid::Uuid, Path, description = "Note id"), ("If-Match" = String, Header, description = "The ETag you read")), responses((status = 200, description = "Signed and locked", body = super::notes::NoteView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict, problems::IfMatchRefused), security(("bearer" = [])))]
pub(crate) fn sign(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients" / Uuid / "notes" / Uuid / "sign")
        .and(warp::post())
        .and(crate::access::with_role(state, &[Role::Provider]))
        .and(request_context())
        .and(etag::if_match())
        .and(with_state(state))
        .then(on_sign)
        .boxed()
}

async fn on_sign(
    patient_id: Uuid,
    note_id: Uuid,
    caller: Caller,
    ctx: RequestContext,
    if_match: IfMatch,
    state: AppState,
) -> Response {
    let result = with_note(
        &state,
        &ctx,
        caller,
        (patient_id, note_id),
        Operation::WriteNotes,
        move |conn, state, access, note| {
            authored(access, &note)?;
            if note.is_signed() {
                return Err(RecordsError::Other(Error::conflict(
                    "note_signed",
                    "the note is already signed",
                )));
            }
            if_match.check(note.current_version)?;
            let note = notes::sign(conn, &note, caller.account_id)?;
            let version = notes::version(conn, note.id, note.current_version)?;
            let content = notes::open(&state.crypto, &version)?;
            audit::record(
                conn,
                &note_event(access, action::UPDATE, note.id)
                    .detail(Code::new("change"), DetailValue::Code(Code::new("signed"))),
            )?;
            Ok(notes::view(note, content))
        },
    )
    .await;
    reply::respond(result.map(|view| etag::json(StatusCode::OK, &view)))
}

/// POST /v1/patients/{id}/notes/{note_id}/amendments: after signing, a provider with
/// access adds an amendment: a new version, the signed one kept as it was.
#[utoipa::path(post, path = "/v1/patients/{id}/notes/{note_id}/amendments", tag = "notes", params(("id" = uuid::Uuid, Path, description = "Patient id"), ("note_id" = uuid::Uuid, Path, description = "Note id")), request_body = Content, responses((status = 201, description = "The amendment (a new version)", body = super::notes::NoteView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict), security(("bearer" = [])))]
pub(crate) fn amend(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients" / Uuid / "notes" / Uuid / "amendments")
        .and(warp::post())
        .and(crate::access::with_role(state, &[Role::Provider]))
        .and(request_context())
        .and(body::json::<Content>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(|patient_id, note_id, caller, ctx, input, state| async move {
            revise(
                (patient_id, note_id),
                Revision::Amendment,
                caller,
                ctx,
                input,
                state,
            )
            .await
        })
        .boxed()
}
