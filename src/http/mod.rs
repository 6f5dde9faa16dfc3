//! The HTTP edge: mapping rejections to problems ([`recover`]), serving connections,
//! and what every route module uses (body and query parsing, replies, ETags, the
//! WebSocket handshake, and in [`web`] the embedded browser client). The route tree
//! itself is assembled above the features, in the `api` module.
//!
//! Conventions every route module follows:
//! - a route is a function returning a filter, documented with its method and path;
//! - path first, then method, then access (`access::caller` / `access::with_role`), then
//!   the body: so an unknown path is a 404, a known path with the wrong method a 405,
//!   and only a matched route ever asks for credentials;
//! - handlers return `Result<Response, Error>` and are turned into responses with
//!   [`reply::respond`]; every route is documented (utoipa), which is how the edge
//!   knows it ([`routes::RouteTable`]).

pub mod body;
pub mod connection;
pub mod edge;
pub mod etag;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod reply;
pub mod routes;
pub mod server;
pub mod tokens;
pub mod web;
pub mod websocket;

use std::convert::Infallible;

use warp::reject::{InvalidHeader, InvalidQuery, MethodNotAllowed, MissingHeader, PayloadTooLarge};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::context::RequestContext;
use crate::error::Error;

pub use edge::{ClientIp, RequestId};

/// The one place a rejection becomes a response.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let err = if let Some(err) = rejection.find::<Error>() {
        return Ok(reply::error(err));
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        Error::MethodNotAllowed
    } else if rejection.is_not_found() {
        Error::RouteNotFound
    } else if rejection.find::<PayloadTooLarge>().is_some() {
        Error::PayloadTooLarge { limit: 0 }
    } else if let Some(missing) = rejection.find::<MissingHeader>() {
        Error::bad_request(format!("the {} header is required", missing.name()))
    } else if let Some(invalid) = rejection.find::<InvalidHeader>() {
        Error::bad_request(format!("the {} header is invalid", invalid.name()))
    } else if rejection.find::<InvalidQuery>().is_some() {
        Error::bad_request("the query string is invalid")
    } else if rejection.find::<warp::reject::UnsupportedMediaType>().is_some() {
        Error::UnsupportedMediaType
    } else if rejection.find::<warp::ws::MissingConnectionUpgrade>().is_some() {
        Error::bad_request("this route expects a WebSocket upgrade")
    } else {
        Error::Internal(anyhow::anyhow!("unhandled rejection: {rejection:?}"))
    };
    Ok(reply::error(&err))
}

/// Shares the application state (or a feature's state) with a handler.
pub fn with_state<S: Clone + Send + Sync + 'static>(
    state: &S,
) -> impl Filter<Extract = (S,), Error = Infallible> + Clone + use<S> {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// The request's id and client address, for audit records and throttling.
pub fn request_context() -> impl Filter<Extract = (RequestContext,), Error = Rejection> + Clone {
    warp::ext::optional::<RequestId>()
        .and(warp::ext::optional::<ClientIp>())
        .and(warp::header::optional::<String>("user-agent"))
        .map(
            |request_id: Option<RequestId>, ip: Option<ClientIp>, user_agent: Option<String>| {
                RequestContext {
                    request_id: request_id.map(|r| r.0.to_string()).unwrap_or_default(),
                    client_ip: ip.map(|ip| ip.0),
                    user_agent: user_agent.map(|ua| ua.chars().take(256).collect()),
                }
            },
        )
}
