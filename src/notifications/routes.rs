//! The notification routes: the REST side of what the WebSocket pushes. Both are
//! audited where they touch PHI ([`super::disclose`]).

use http::StatusCode;
use serde_json::json;
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::channels::view;
use crate::audit::action;
use crate::context::{Caller, RequestContext};
use crate::error::Error;
use crate::http::openapi::problems;
use crate::http::query::Query;
use crate::http::{reply, request_context, with_state};
use crate::state::AppState;

/// GET /v1/me/notifications?unread=true&cursor=&limit=: the caller's notifications,
/// newest first.
#[utoipa::path(get, path = "/v1/me/notifications", tag = "notifications", params(("unread" = Option<bool>, Query, description = "Only unread ones"), ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)), responses((status = 200, description = "Notifications, newest first", body = crate::http::openapi::Page<super::Notification>), problems::Unauthorized, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn list(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "me" / "notifications")
        .and(warp::get())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(crate::http::query::raw())
        .and(with_state(state))
        .then(on_list)
        .map(reply::respond)
        .boxed()
}

async fn on_list(
    caller: Caller,
    ctx: RequestContext,
    raw: String,
    state: AppState,
) -> Result<Response, Error> {
    let q = Query::parse(&raw, &["unread", "cursor", "limit"])?;
    let unread = q
        .parsed("unread", "must be true or false", |v| match v {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        })?
        .unwrap_or(false);
    let before = q.uuid("cursor")?;
    let limit = q.number("limit", 50, 1, 200)?;
    let items = state
        .db
        .run(move |conn| {
            diesel::Connection::transaction(conn, |conn| {
                let items = super::list(conn, caller.account_id, unread, before, limit)?;
                super::disclose(conn, &ctx, &caller, action::READ, &items)?;
                Ok(items)
            })
        })
        .await?;
    let next = (items.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .then(|| items.last().map(|n| n.id))
        .flatten();
    let views: Vec<_> = items.iter().map(view).collect();
    Ok(reply::json(
        StatusCode::OK,
        &json!({ "items": views, "next_cursor": next }),
    ))
}

/// POST /v1/me/notifications/{id}/read: marks one read (idempotent).
#[utoipa::path(post, path = "/v1/me/notifications/{id}/read", tag = "notifications", params(("id" = uuid::Uuid, Path, description = "Notification id")), responses((status = 200, description = "Read", body = super::Notification), problems::Unauthorized, problems::NotFound), security(("bearer" = [])))]
pub(crate) fn read(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "me" / "notifications" / Uuid / "read")
        .and(warp::post())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(with_state(state))
        .then(on_read)
        .boxed()
}

async fn on_read(id: Uuid, caller: Caller, ctx: RequestContext, state: AppState) -> Response {
    let result = state
        .db
        .run(move |conn| super::read_one(conn, &ctx, &caller, id)?.ok_or(Error::NotFound))
        .await
        .map(|n| reply::json(StatusCode::OK, &view(&n)));
    reply::respond(result)
}
