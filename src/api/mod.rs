//! The API as a whole: the route tree of every feature behind one edge, and the
//! OpenAPI document generated from the routes' annotations ([`openapi`]).
//!
//! This is the top of the dependency graph, just under start-up: it names every
//! feature module, and none of them names it.

mod links;
pub mod openapi;
mod responses;

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::consult::ConsultState;
use crate::realtime::RealtimeState;
use crate::state::AppState;

/// Every route of the server, with rejections turned into problem documents.
/// `extra` lets tests mount routes of their own behind the same edge.
pub fn routes(
    state: &AppState,
    realtime: &RealtimeState,
    consult: &ConsultState,
    extra: Option<BoxedFilter<(Response,)>>,
) -> BoxedFilter<(Response,)> {
    let api = crate::http::health::routes(state)
        .or(openapi::openapi_json())
        .unify()
        .or(crate::accounts::session_routes::routes(state))
        .unify()
        .or(crate::accounts::routes::routes(state))
        .unify()
        .or(crate::records::audit_routes::routes(state))
        .unify()
        .or(crate::records::routes::routes(state))
        .unify()
        .or(crate::scheduling::provider_routes::routes(state))
        .unify()
        .or(crate::scheduling::appointment_routes::routes(state))
        .unify()
        .or(crate::realtime::gateway::ticket(state))
        .unify()
        .or(crate::realtime::gateway::ws(realtime))
        .unify()
        .or(crate::notifications::routes::list(state))
        .unify()
        .or(crate::notifications::routes::read(state))
        .unify()
        .or(crate::consult::routes::socket(consult))
        .unify()
        .or(crate::consult::routes::ice_servers(consult))
        .unify()
        .boxed();
    let api = match extra {
        Some(extra) => api.or(extra).unify().boxed(),
        None => api,
    };
    // The browser client last: it answers only exact hits of its own table, so every
    // API path (and every API rejection, such as a 405) is decided before it.
    api.or(crate::http::web::routes(state))
        .unify()
        .recover(crate::http::recover)
        .unify()
        .boxed()
}
