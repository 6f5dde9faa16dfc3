//! Reading the audit log over HTTP: the admin search. Reading it is itself audited.

use carewire_audit::store::{self, Search};
use http::StatusCode;
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::view::EventView;
use super::{action, purpose, resource};
use crate::auth::{self, Caller, Role};
use crate::error::Error;
use crate::http::query::{self, Query};
use crate::http::{RequestContext, reply, request_context, with_state};
use crate::state::AppState;

pub fn routes(state: &AppState) -> BoxedFilter<(Response,)> {
    admin_search(state)
}

const SEARCH_PARAMS: &[&str] = &["patient", "actor", "action", "since", "until", "cursor", "limit"];

/// GET /v1/admin/audit?patient=&actor=&action=&since=&until=&cursor=&limit=: audit
/// events, newest first, 50 a page by default (at most 500).
fn admin_search(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "admin" / "audit")
        .and(warp::get())
        .and(auth::with_role(state, &[Role::Admin]))
        .and(request_context())
        .and(query::raw())
        .and(with_state(state))
        .then(
            |admin: Caller, ctx: RequestContext, raw: String, state: AppState| async move {
                reply::respond(admin_search_handler(admin, ctx, &raw, state).await)
            },
        )
        .boxed()
}

async fn admin_search_handler(
    admin: Caller,
    ctx: RequestContext,
    raw: &str,
    state: AppState,
) -> Result<Response, Error> {
    let q = Query::parse(raw, SEARCH_PARAMS)?;
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
                let mut event = super::event(
                    &ctx,
                    super::actor(&admin),
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
                super::record(conn, &event)?;
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
