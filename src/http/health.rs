//! Liveness, readiness and metrics.

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::reply;
use crate::error::Error;
use crate::state::AppState;

pub fn routes(state: &AppState) -> BoxedFilter<(Response,)> {
    healthz()
        .or(readyz(state))
        .unify()
        .or(metrics(state))
        .unify()
        .boxed()
}

/// What `/healthz` and `/readyz` answer when all is well.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct HealthStatus {
    /// `ok` (the process is up) or `ready` (and the database with it).
    #[schema(example = "ready")]
    pub status: &'static str,
}

/// GET /healthz: the process is up. Touches nothing else.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up", body = HealthStatus)))]
pub(crate) fn healthz() -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("healthz")
        .and(warp::get())
        .map(|| reply::json(StatusCode::OK, &HealthStatus { status: "ok" }))
}

/// GET /readyz: the database answers and has every migration this binary knows.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Ready", body = HealthStatus), (status = 503, description = "Database unreachable or migrations pending", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json")))]
pub(crate) fn readyz(
    state: &AppState,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + use<> {
    let state = state.clone();
    warp::path!("readyz").and(warp::get()).then(move || {
        let state = state.clone();
        async move {
            let result = state
                .db
                .run(|conn| {
                    if crate::db::has_pending_migrations(conn)? {
                        Err(Error::Unavailable("database migrations are pending"))
                    } else {
                        Ok(())
                    }
                })
                .await;
            match result {
                Ok(()) => reply::json(StatusCode::OK, &HealthStatus { status: "ready" }),
                Err(Error::Internal(_)) => reply::error(&Error::Unavailable("database check failed")),
                Err(e) => reply::error(&e),
            }
        }
    })
}

/// GET /metrics: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text exposition")))]
pub(crate) fn metrics(
    state: &AppState,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + use<> {
    let state = state.clone();
    warp::path!("metrics").and(warp::get()).map(move || {
        let mut res = Response::new(super::metrics::render(&state.db).into());
        res.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        res
    })
}
