//! Patient record routes: profiles, lookup and break-glass. Notes are in
//! [`super::note_routes`].

use diesel::Connection;
use http::StatusCode;
use http::header::{HeaderValue, LOCATION};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::access::Operation;
use super::demographics::{Demographics, LegalName, normalize_mrn, normalize_phone};
use super::patients::{self, Lookup};
use super::{RecordsError, break_glass, fields, guarded};
use crate::access::Patch;
use crate::audit::{self, Code, DetailValue, action, purpose, resource};
use crate::context::RequestContext;
use crate::context::{Caller, Role};
use crate::error::Error;
use crate::http::etag;
use crate::http::openapi::problems;
use crate::http::query::{self, Query};
use crate::http::{body, reply, request_context, with_state};
use crate::state::AppState;
use crate::text::{self, Rules};

pub fn routes(state: &AppState) -> BoxedFilter<(Response,)> {
    create(state)
        .or(read(state))
        .unify()
        .or(update(state))
        .unify()
        .or(search(state))
        .unify()
        .or(open_break_glass(state))
        .unify()
        .or(review_break_glass(state))
        .unify()
        .or(super::note_routes::routes(state))
        .unify()
        .boxed()
}

/// POST /v1/patients: a patient creates their own record; a provider or admin creates
/// one for a patient (who may have no account).
#[utoipa::path(post, path = "/v1/patients", tag = "patients", request_body = Demographics, responses((status = 201, description = "Created", body = super::patients::PatientView), problems::Unauthorized, problems::Conflict, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn create(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients")
        .and(warp::post())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(body::json::<Demographics>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_create)
        .map(reply::respond)
        .boxed()
}

async fn on_create(
    caller: Caller,
    ctx: RequestContext,
    input: Demographics,
    state: AppState,
) -> Result<Response, Error> {
    let demographics = input.validated()?;
    let own = caller.role == Role::Patient;
    let purpose = match caller.role {
        Role::Patient => purpose::PATIENT_REQUEST,
        Role::Provider => purpose::TREATMENT,
        Role::Admin => purpose::OPERATIONS,
    };
    let view = state
        .with_db(move |conn, state| {
            conn.transaction(|conn| {
                let row = patients::create(
                    conn,
                    &state.crypto,
                    own.then_some(caller.account_id),
                    caller.account_id,
                    &demographics,
                )?;
                let event = audit::event(
                    &ctx,
                    audit::actor(&caller),
                    action::CREATE,
                    resource::PATIENT,
                    purpose,
                )
                .resource(row.id)
                .patient(row.id)
                .detail(Code::new("fields"), DetailValue::Code(fields::DEMOGRAPHICS));
                audit::record(conn, &event)?;
                Ok::<_, Error>(patients::view(&row, demographics))
            })
        })
        .await?;
    tracing::info!(patient.id = %view.id, account.id = %caller.account_id, "patient record created");
    let mut res = etag::json(StatusCode::CREATED, &view);
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/patients/{}", view.id)) {
        res.headers_mut().insert(LOCATION, location);
    }
    Ok(res)
}

/// GET /v1/patients/{id}: the profile (audited as a read of demographics).
#[utoipa::path(get, path = "/v1/patients/{id}", tag = "patients", params(("id" = uuid::Uuid, Path, description = "Patient id")), responses((status = 200, description = "The profile (ETag: its version)", body = super::patients::PatientView), problems::Unauthorized, problems::Forbidden, problems::NotFound), security(("bearer" = [])))]
pub(crate) fn read(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients" / Uuid)
        .and(warp::get())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(with_state(state))
        .then(on_read)
        .boxed()
}

async fn on_read(id: Uuid, caller: Caller, ctx: RequestContext, state: AppState) -> Response {
    let result = guarded(
        &state,
        &ctx,
        caller,
        id,
        Operation::ReadDemographics,
        fields::DEMOGRAPHICS,
        |conn, state, access| {
            let demographics = patients::open(&state.crypto, &access.patient)?;
            audit::record(
                conn,
                &access
                    .event(action::READ, resource::PATIENT, fields::DEMOGRAPHICS)
                    .resource(access.patient.id),
            )?;
            Ok(patients::view(&access.patient, demographics))
        },
    )
    .await;
    reply::respond(result.map(|view| etag::json(StatusCode::OK, &view)))
}

/// PATCH /v1/patients/{id}: a JSON merge patch of the profile; needs `If-Match`.
#[utoipa::path(patch, path = "/v1/patients/{id}", tag = "patients", params(("id" = uuid::Uuid, Path, description = "Patient id"), ("If-Match" = String, Header, description = "The ETag you read")), request_body = Object, responses((status = 200, description = "Updated", body = super::patients::PatientView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::IfMatchRefused, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn update(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients" / Uuid)
        .and(crate::access::patch(state))
        .and(with_state(state))
        .then(on_update)
        .boxed()
}

async fn on_update(id: Uuid, patch: Patch, state: AppState) -> Response {
    let (caller, ctx, if_match, members) = patch.into_parts();
    let result = guarded(
        &state,
        &ctx,
        caller,
        id,
        Operation::UpdateDemographics,
        fields::DEMOGRAPHICS,
        move |conn, state, access| {
            let expected = if_match.check(access.patient.version)?;
            let old = patients::open(&state.crypto, &access.patient)?;
            let new = old.patched(&members)?;
            let row = patients::update(conn, &state.crypto, &access.patient, expected, &old, &new)?
                .ok_or(RecordsError::Other(Error::PreconditionFailed))?;
            audit::record(
                conn,
                &access
                    .event(action::UPDATE, resource::PATIENT, fields::DEMOGRAPHICS)
                    .resource(row.id),
            )?;
            Ok(patients::view(&row, new))
        },
    )
    .await;
    reply::respond(result.map(|view| etag::json(StatusCode::OK, &view)))
}

/// A search hit: just enough to tell patients apart.
#[derive(Serialize, utoipa::ToSchema)]
struct Match {
    id: Uuid,
    legal_name: LegalName,
    birth_date: chrono::NaiveDate,
}

/// GET /v1/patients?email=…|mrn=…|phone=…&purpose=…: exact match through the blind
/// indexes (providers and admins). Each patient found, or the empty result, is audited
/// as a read with the field searched by and the purpose of use the caller states
/// (providers: `treatment`, the default, or `operations` such as scheduling; admins:
/// `operations` only).
#[utoipa::path(get, path = "/v1/patients", tag = "patients", params(("email" = Option<String>, Query), ("mrn" = Option<String>, Query), ("phone" = Option<String>, Query), ("purpose" = Option<String>, Query, description = "Why: treatment or operations (providers), operations (admins)")), responses((status = 200, description = "Exact matches", body = crate::http::openapi::Items<Match>), problems::Unauthorized, problems::Forbidden, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn search(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients")
        .and(warp::get())
        .and(crate::access::with_role(state, &[Role::Provider, Role::Admin]))
        .and(request_context())
        .and(query::raw())
        .and(with_state(state))
        .then(on_search)
        .map(reply::respond)
        .boxed()
}

async fn on_search(
    caller: Caller,
    ctx: RequestContext,
    raw: String,
    state: AppState,
) -> Result<Response, Error> {
    let q = Query::parse(&raw, &["email", "mrn", "phone", "purpose"])?;
    // What each role may state: an admin's lookups are operations; a provider's are
    // treatment or operations (scheduling). An emergency goes through break-glass,
    // which names one patient and is reviewed, not through a lookup.
    let stated = match caller.role {
        Role::Admin => q.parsed("purpose", "must be operations for an admin", |v| {
            (v == "operations").then_some(purpose::OPERATIONS)
        })?,
        _ => q.parsed(
            "purpose",
            "must be treatment or operations (for an emergency, use break-glass)",
            |v| match v {
                "treatment" => Some(purpose::TREATMENT),
                "operations" => Some(purpose::OPERATIONS),
                _ => None,
            },
        )?,
    };
    let by = Code::new(match (q.str("email"), q.str("mrn")) {
        (Some(_), _) => "email",
        (None, Some(_)) => "mrn",
        (None, None) => "phone",
    });
    let lookup = match (q.str("email"), q.str("mrn"), q.str("phone")) {
        (Some(email), None, None) => Lookup::Email(
            crate::accounts::Email::parse(email)
                .map_err(|_| Error::validation("query.email", "must be a valid email address"))?
                .as_str()
                .to_owned(),
        ),
        (None, Some(mrn), None) => Lookup::Mrn(normalize_mrn(mrn)),
        (None, None, Some(phone)) => Lookup::Phone(
            normalize_phone(phone)
                .ok_or_else(|| Error::validation("query.phone", "must be a phone number"))?,
        ),
        _ => {
            return Err(Error::validation(
                "query",
                "give exactly one of email, mrn or phone",
            ));
        }
    };
    let purpose = stated.unwrap_or_else(|| audit::purpose_of(caller.role));
    let matches = state
        .with_db(move |conn, state| {
            conn.transaction(|conn| {
                let found = patients::search(conn, &state.crypto, &lookup)?;
                let base = audit::event(
                    &ctx,
                    audit::actor(&caller),
                    action::READ,
                    resource::PATIENT,
                    purpose,
                )
                .detail(
                    Code::new("fields"),
                    DetailValue::Code(fields::DEMOGRAPHICS_SUMMARY),
                )
                .detail(Code::new("via"), DetailValue::Code(Code::new("lookup")))
                .detail(Code::new("by"), DetailValue::Code(by));
                if found.is_empty() {
                    audit::record(
                        conn,
                        &base.clone().detail(Code::new("results"), DetailValue::Count(0)),
                    )?;
                }
                for (row, _) in &found {
                    audit::record(conn, &base.clone().resource(row.id).patient(row.id))?;
                }
                Ok::<_, Error>(
                    found
                        .into_iter()
                        .map(|(row, d)| Match {
                            id: row.id,
                            legal_name: d.legal_name,
                            birth_date: d.birth_date,
                        })
                        .collect::<Vec<_>>(),
                )
            })
        })
        .await?;
    Ok(reply::json(
        StatusCode::OK,
        &serde_json::json!({ "items": matches }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BreakGlassRequest {
    reason: String,
}

/// POST /v1/patients/{id}/break-glass: a provider opens a record outside the care
/// relationship, for `CAREWIRE_BREAK_GLASS_MINUTES`, stating why.
#[utoipa::path(post, path = "/v1/patients/{id}/break-glass", tag = "patients", params(("id" = uuid::Uuid, Path, description = "Patient id")), request_body = BreakGlassRequest, responses((status = 201, description = "Emergency access granted", body = break_glass::Granted), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn open_break_glass(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "patients" / Uuid / "break-glass")
        .and(warp::post())
        .and(crate::access::with_role(state, &[Role::Provider]))
        .and(request_context())
        .and(body::json::<BreakGlassRequest>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_open_break_glass)
        .map(reply::respond)
        .boxed()
}

async fn on_open_break_glass(
    patient_id: Uuid,
    caller: Caller,
    ctx: RequestContext,
    input: BreakGlassRequest,
    state: AppState,
) -> Result<Response, Error> {
    let reason = text::parse("reason", &input.reason, Rules::prose(500).at_least(10))?;
    let duration = state.settings.records.break_glass_duration;
    let granted = state
        .with_db(move |conn, state| {
            conn.transaction(|conn| {
                patients::load(conn, patient_id)?.ok_or(Error::NotFound)?;
                let granted = break_glass::open(
                    conn,
                    &state.crypto,
                    caller.account_id,
                    patient_id,
                    &reason,
                    duration,
                )?;
                let event = audit::event(
                    &ctx,
                    audit::actor(&caller),
                    action::BREAK_GLASS_START,
                    resource::PATIENT,
                    purpose::EMERGENCY,
                )
                .resource(patient_id)
                .patient(patient_id)
                .detail(Code::new("grant_id"), DetailValue::Id(granted.id))
                .detail(
                    Code::new("minutes"),
                    DetailValue::Count(i64::try_from(duration.as_secs() / 60).unwrap_or(i64::MAX)),
                );
                audit::record(conn, &event)?;
                Ok::<_, Error>(granted)
            })
        })
        .await?;
    tracing::warn!(provider.id = %caller.account_id, patient.id = %patient_id, grant.id = %granted.id, "break-glass access opened");
    Ok(reply::json(StatusCode::CREATED, &granted))
}

/// GET /v1/admin/break-glass?since=…&limit=…: grants to review, with their reasons.
#[utoipa::path(get, path = "/v1/admin/break-glass", tag = "patients", params(("since" = Option<String>, Query), ("limit" = Option<i64>, Query)), responses((status = 200, description = "Grants with their reasons", body = crate::http::openapi::Items<break_glass::Review>), problems::Unauthorized, problems::Forbidden), security(("bearer" = [])))]
pub(crate) fn review_break_glass(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "admin" / "break-glass")
        .and(warp::get())
        .and(crate::access::with_role(state, &[Role::Admin]))
        .and(request_context())
        .and(query::raw())
        .and(with_state(state))
        .then(on_review_break_glass)
        .map(reply::respond)
        .boxed()
}

async fn on_review_break_glass(
    caller: Caller,
    ctx: RequestContext,
    raw: String,
    state: AppState,
) -> Result<Response, Error> {
    let q = Query::parse(&raw, &["since", "limit"])?;
    let since = q
        .datetime("since")?
        .unwrap_or_else(|| state.clock.now() - chrono::Duration::days(30));
    let limit = q.number("limit", 100, 1, 500)?;
    let grants = state
        .with_db(move |conn, state| {
            conn.transaction(|conn| {
                let grants = break_glass::review(conn, &state.crypto, since, limit)?;
                let event = audit::event(
                    &ctx,
                    audit::actor(&caller),
                    action::READ,
                    Code::new("break_glass"),
                    purpose::SYSTEM_ADMINISTRATION,
                )
                .detail(Code::new("results"), DetailValue::Count(grants.len() as i64));
                audit::record(conn, &event)?;
                Ok::<_, Error>(grants)
            })
        })
        .await?;
    Ok(reply::json(
        StatusCode::OK,
        &serde_json::json!({ "items": grants }),
    ))
}
