//! Reading the audit log over HTTP: the admin search and a patient's access log (who
//! saw my record). Reading either is itself audited. The log itself, and its views,
//! are [`crate::audit`]'s; the routes live here, above the access layer, because
//! the access layer records its refusals in the audit log.

use carewire_audit::store::{self, Search};
use http::StatusCode;
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::audit::view::EventView;
use crate::audit::{self, action, purpose, resource};
use crate::context::RequestContext;
use crate::context::{Caller, Role};
use crate::error::Error;
use crate::http::openapi::problems;
use crate::http::query::{self, Query};
use crate::http::{reply, request_context, with_state};
use crate::state::AppState;

pub fn routes(state: &AppState) -> BoxedFilter<(Response,)> {
    admin_search(state).or(me_access_log(state)).unify().boxed()
}

const SEARCH_PARAMS: &[&str] = &["patient", "actor", "action", "since", "until", "cursor", "limit"];

/// GET /v1/admin/audit?patient=&actor=&action=&since=&until=&cursor=&limit=: audit
/// events, newest first, 50 a page by default (at most 500).
#[utoipa::path(get, path = "/v1/admin/audit", tag = "audit", params(("patient" = Option<uuid::Uuid>, Query), ("actor" = Option<uuid::Uuid>, Query), ("action" = Option<String>, Query), ("since" = Option<String>, Query, description = "RFC 3339"), ("until" = Option<String>, Query, description = "RFC 3339"), ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query, description = "1 to 500, default 50")), responses((status = 200, description = "Audit events, newest first", body = crate::http::openapi::Page<crate::audit::view::EventView>), problems::Unauthorized, problems::Forbidden, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn admin_search(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "admin" / "audit")
        .and(warp::get())
        .and(crate::access::with_role(state, &[Role::Admin]))
        .and(request_context())
        .and(query::raw())
        .and(with_state(state))
        .then(on_admin_search)
        .map(reply::respond)
        .boxed()
}

async fn on_admin_search(
    admin: Caller,
    ctx: RequestContext,
    raw: String,
    state: AppState,
) -> Result<Response, Error> {
    let q = Query::parse(&raw, SEARCH_PARAMS)?;
    let search = Search {
        patient_id: q.uuid("patient")?,
        actor_id: q.uuid("actor")?,
        action: q.parsed("action", "must be an action code such as login or read", |v| {
            carewire_audit::Code::parse(v).ok()
        })?,
        since: q.datetime("since")?,
        until: q.datetime("until")?,
        before_id: query::decode_cursor(&q, "cursor")?,
        limit: q.number("limit", 50, 1, 500)?,
    };
    let limit = search.limit;
    let rows = state
        .with_db(move |conn, _| {
            use diesel::Connection;
            conn.transaction(|conn| {
                let rows = store::search(conn, &search)?;
                let mut event = audit::event(
                    &ctx,
                    audit::actor(&admin),
                    action::READ,
                    resource::AUDIT_LOG,
                    purpose::SYSTEM_ADMINISTRATION,
                )
                .detail(
                    carewire_audit::Code::new("results"),
                    carewire_audit::DetailValue::Count(rows.len() as i64),
                );
                if let Some(patient) = search.patient_id {
                    event = event.patient(patient);
                }
                audit::record(conn, &event)?;
                Ok::<_, Error>(rows)
            })
        })
        .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| query::encode_cursor(r.id())))
        .flatten();
    let items: Vec<EventView> = rows.into_iter().map(EventView::from).collect();
    Ok(reply::json(
        StatusCode::OK,
        &json!({ "items": items, "next_cursor": next_cursor }),
    ))
}

/// What a patient sees of one access to their record.
#[derive(serde::Serialize, Debug, utoipa::ToSchema)]
struct AccessView {
    at: chrono::DateTime<chrono::Utc>,
    /// `you`, a staff member's display name, or `Carewire`.
    accessor: String,
    role: Option<String>,
    action: String,
    /// What was touched: `demographics`, `notes`, …
    fields: Option<String>,
    purpose: String,
    outcome: String,
    /// Access opened with break-glass, outside the care relationship.
    emergency: bool,
}

/// GET /v1/me/access-log?cursor=&limit=: who accessed the caller's patient record and
/// when, newest first (the HIPAA accounting of disclosures). Only events about the
/// caller's own record; reading it is itself recorded.
#[utoipa::path(get, path = "/v1/me/access-log", tag = "audit", params(("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)), responses((status = 200, description = "Who accessed your record, newest first", body = crate::http::openapi::Page<AccessView>), problems::Unauthorized), security(("bearer" = [])))]
pub(crate) fn me_access_log(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "me" / "access-log")
        .and(warp::get())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(query::raw())
        .and(with_state(state))
        .then(on_me_access_log)
        .map(reply::respond)
        .boxed()
}

async fn on_me_access_log(
    caller: Caller,
    ctx: RequestContext,
    raw: String,
    state: AppState,
) -> Result<Response, Error> {
    let q = Query::parse(&raw, &["cursor", "limit"])?;
    let before_id = query::decode_cursor(&q, "cursor")?;
    let limit = q.number("limit", 50, 1, 200)?;
    let (rows, names) = state
        .with_db(move |conn, _| {
            use diesel::prelude::*;
            conn.transaction(|conn| {
                let Some(patient_id) = crate::accounts::patient_id(conn, caller.account_id)? else {
                    return Ok::<_, Error>((Vec::new(), Vec::new()));
                };
                let rows = store::search(
                    conn,
                    &Search {
                        patient_id: Some(patient_id),
                        before_id,
                        limit,
                        ..Search::default()
                    },
                )?;
                let actors: Vec<uuid::Uuid> = rows.iter().filter_map(|r| r.event.actor_id).collect();
                let names: Vec<(uuid::Uuid, Option<String>)> = crate::schema::accounts::table
                    .filter(crate::schema::accounts::id.eq_any(actors))
                    .select((crate::schema::accounts::id, crate::schema::accounts::display_name))
                    .load(conn)?;
                let event = audit::event(
                    &ctx,
                    audit::actor(&caller),
                    action::READ,
                    resource::AUDIT_LOG,
                    purpose::PATIENT_REQUEST,
                )
                .patient(patient_id);
                audit::record(conn, &event)?;
                Ok((rows, names))
            })
        })
        .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| query::encode_cursor(r.id())))
        .flatten();
    let items: Vec<AccessView> = rows
        .into_iter()
        .map(|row| {
            let e = row.event;
            let accessor = match (e.actor_kind.as_str(), e.actor_id) {
                ("user", Some(id)) if id == caller.account_id => "you".to_owned(),
                ("user", Some(id)) => names
                    .iter()
                    .find(|(n, _)| *n == id)
                    .and_then(|(_, name)| name.clone())
                    .unwrap_or_else(|| match e.actor_role.as_deref() {
                        Some("provider") => "a provider".to_owned(),
                        Some("admin") => "an administrator".to_owned(),
                        _ => "someone".to_owned(),
                    }),
                _ => "Carewire".to_owned(),
            };
            let fields = e
                .details
                .get("fields")
                .and_then(|f| f.get("code"))
                .and_then(|c| c.as_str())
                .map(str::to_owned);
            AccessView {
                at: e.recorded_at,
                accessor,
                role: e.actor_role.filter(|_| e.actor_kind == "user"),
                action: e.action,
                fields,
                emergency: e.purpose == "ETREAT",
                purpose: e.purpose,
                outcome: e.outcome,
            }
        })
        .collect();
    Ok(reply::json(
        StatusCode::OK,
        &json!({ "items": items, "next_cursor": next_cursor }),
    ))
}
