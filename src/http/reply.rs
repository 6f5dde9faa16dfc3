//! Building responses: JSON bodies and problem documents.

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use warp::reply::Response;

use crate::error::{Error, Problem};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// A JSON response with `status`.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut res = Response::new(bytes.into());
            *res.status_mut() = status;
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res
        }
        Err(e) => error(&Error::Internal(
            anyhow::Error::new(e).context("serializing a response"),
        )),
    }
}

/// An empty response with `status`.
pub fn empty(status: StatusCode) -> Response {
    let mut res = Response::new(Vec::<u8>::new().into());
    *res.status_mut() = status;
    res
}

/// The problem document for `err`, with the headers its status calls for. Internal
/// causes are logged here, once, inside the request's span (which holds its id).
pub fn error(err: &Error) -> Response {
    match err {
        Error::Internal(cause) => tracing::error!(error = format!("{cause:#}"), "request failed"),
        Error::Unavailable(why) => tracing::warn!(reason = why, "dependency unavailable"),
        _ => {}
    }
    let mut res = problem(&err.to_problem());
    if let Error::TooManyRequests { retry_after } = err {
        let secs = retry_after.as_secs().max(1);
        res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Error::Unauthorized { .. } = err {
        res.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"carewire\""),
        );
    }
    if let Error::Unavailable(_) = err {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

/// A problem document as a response.
pub fn problem(problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_else(|_| b"{}".to_vec());
    let mut res = Response::new(body.into());
    *res.status_mut() = problem.status_code();
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res
}

/// Turns a handler's result into a response.
pub fn respond(result: Result<Response, Error>) -> Response {
    result.unwrap_or_else(|e| error(&e))
}
