//! The one error type of the server and its mapping to RFC 9457 problem details.
//!
//! Which error to use where:
//! - Domain and handler code returns [`Error`]; pick the variant that says what the
//!   *caller* did wrong (or that we failed), never how we found out.
//! - Database errors convert with `?`: `diesel::NotFound` becomes 404, a pool that
//!   cannot hand out a connection becomes 503, anything else is a 500 whose cause is
//!   logged once at the edge (with the request id) and never sent to the client.
//! - Nothing in a problem's `detail` may hold patient data or internals: details are
//!   written here or by validation code from field names, never from input values.

use std::borrow::Cow;
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;

/// Every failure a request can end in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No route matches the path.
    #[error("no route")]
    RouteNotFound,
    /// The path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The resource does not exist, or the caller may not know that it does.
    #[error("not found")]
    NotFound,
    /// The body is larger than the configured limit.
    #[error("payload too large")]
    PayloadTooLarge { limit: usize },
    /// The request's body did not arrive within `CAREWIRE_HTTP_BODY_TIMEOUT_MS`.
    #[error("request timeout")]
    RequestTimeout,
    /// The body is not JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The request is syntactically wrong (malformed JSON, a bad header or query).
    #[error("bad request: {detail}")]
    BadRequest { detail: Cow<'static, str> },
    /// Well-formed input that breaks a rule; names the field, never its value.
    #[error("validation failed on {field}")]
    Validation {
        field: Cow<'static, str>,
        reason: Cow<'static, str>,
    },
    /// No valid credentials.
    #[error("unauthorized: {reason}")]
    Unauthorized { reason: &'static str },
    /// Authenticated, but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// Authenticated, but not allowed, for a reason the client can act on.
    #[error("refused: {code}")]
    Refused { code: String, detail: Cow<'static, str> },
    /// A change needs `If-Match` and none was sent.
    #[error("precondition required")]
    PreconditionRequired,
    /// `If-Match` named a version that is no longer current.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The request conflicts with the current state; `code` is stable.
    #[error("conflict: {code}")]
    Conflict {
        code: &'static str,
        detail: Cow<'static, str>,
    },
    /// Throttled; retry after the given time.
    #[error("too many requests")]
    TooManyRequests { retry_after: Duration },
    /// The database cannot be reached or the pool is exhausted.
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    /// A bug or an unexpected failure. The cause is logged, never sent.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn validation(field: impl Into<Cow<'static, str>>, reason: impl Into<Cow<'static, str>>) -> Self {
        Error::Validation {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Error::BadRequest {
            detail: detail.into(),
        }
    }

    pub fn conflict(code: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Error::Conflict {
            code,
            detail: detail.into(),
        }
    }

    pub fn internal(context: &'static str) -> Self {
        Error::Internal(anyhow::anyhow!(context))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::RouteNotFound | Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::Forbidden | Error::Refused { .. } => StatusCode::FORBIDDEN,
            Error::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Error::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem document the client sees.
    pub fn to_problem(&self) -> Problem {
        let problem = |slug: &'static str, title: &'static str| Problem::new(slug, title, self.status());
        match self {
            Error::RouteNotFound => problem("route-not-found", "No such route")
                .detail("No route matches this path. The API is described at /openapi.json."),
            Error::MethodNotAllowed => problem("method-not-allowed", "Method not allowed")
                .detail("This route does not accept this HTTP method."),
            Error::NotFound => problem("not-found", "Not found"),
            Error::PayloadTooLarge { limit } => problem("payload-too-large", "Request body too large")
                .detail(format!("The request body is larger than {limit} bytes."))
                .extension("limit", *limit),
            Error::RequestTimeout => problem("request-timeout", "Request timeout")
                .detail("The request body did not arrive in time; send it again."),
            Error::UnsupportedMediaType => problem("unsupported-media-type", "Unsupported media type")
                .detail("The request body must be JSON (Content-Type: application/json)."),
            Error::BadRequest { detail } => problem("bad-request", "Bad request").detail(detail.clone()),
            Error::Validation { field, reason } => problem("validation-failed", "Validation failed")
                .detail(format!("{field}: {reason}"))
                .extension(
                    "errors",
                    serde_json::json!([{ "field": field, "reason": reason }]),
                ),
            Error::Unauthorized { reason } => problem("unauthorized", "Unauthorized").detail(*reason),
            Error::Forbidden => problem("forbidden", "Forbidden").detail("You are not allowed to do this."),
            Error::Refused { code, detail } => problem("forbidden", "Forbidden")
                .detail(detail.clone())
                .extension("code", code),
            Error::PreconditionRequired => problem("precondition-required", "Precondition required")
                .detail("Send If-Match with the ETag you read, so concurrent changes are not lost."),
            Error::PreconditionFailed => problem("precondition-failed", "Precondition failed")
                .detail("The resource changed since you read it; read it again and retry."),
            Error::Conflict { code, detail } => problem("conflict", "Conflict")
                .detail(detail.clone())
                .extension("code", *code),
            Error::TooManyRequests { retry_after } => problem("too-many-requests", "Too many requests")
                .detail("Too many attempts; wait before trying again.")
                .extension("retry_after", retry_after.as_secs().max(1)),
            Error::Unavailable(_) => problem("service-unavailable", "Service unavailable")
                .detail("A dependency is unavailable; try again shortly."),
            Error::Internal(_) => problem("internal-error", "Internal server error"),
        }
    }
}

impl From<diesel::result::Error> for Error {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::Error as D;
        match err {
            D::NotFound => Error::NotFound,
            // A lost connection mid-request is the database being unavailable, not a bug.
            other if connection_lost(&other) => Error::Unavailable("database connection lost"),
            other => Error::Internal(anyhow::Error::new(other).context("database query failed")),
        }
    }
}

/// Whether `err` says the connection to PostgreSQL is gone, however diesel reports
/// it. After a lost connection, `Connection::transaction` returns the failed
/// ROLLBACK's error (`UnableToSendCommand`) rather than the query's, and a server
/// shut down under us answers with a message only (SQLSTATE 57P01 is not kept).
fn connection_lost(err: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as K, Error as D};
    match err {
        D::DatabaseError(K::ClosedConnection | K::UnableToSendCommand, _) | D::BrokenTransactionManager => {
            true
        }
        D::RollbackErrorOnCommit {
            rollback_error,
            commit_error,
        } => connection_lost(rollback_error) || connection_lost(commit_error),
        D::DatabaseError(_, info) => {
            let message = info.message();
            [
                "server closed the connection unexpectedly",
                "terminating connection due to administrator command",
                "no connection to the server",
                "could not receive data from server",
                "could not send data to server",
                "connection to server was lost",
            ]
            .iter()
            .any(|known| message.contains(known))
        }
        _ => false,
    }
}

impl From<r2d2::Error> for Error {
    fn from(_: r2d2::Error) -> Self {
        Error::Unavailable("no database connection available")
    }
}

impl warp::reject::Reject for Error {}

/// Base of every problem `type`. These are stable identifiers, documented in the
/// README; they are not meant to be fetched.
pub const PROBLEM_BASE: &str = "https://carewire.dev/problems/";

/// An RFC 9457 problem details document.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Cow<'static, str>>,
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(slug: &'static str, title: &'static str, status: StatusCode) -> Self {
        Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail: None,
            extensions: serde_json::Map::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn extension(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.extensions.insert(key.to_owned(), value);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_problem_names_the_field_and_not_the_value() {
        let problem = Error::validation("email", "must be a valid email address").to_problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.kind, "https://carewire.dev/problems/validation-failed");
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["errors"][0]["field"], "email");
    }

    #[test]
    fn an_internal_error_sends_no_detail() {
        let err = Error::Internal(anyhow::anyhow!("password=hunter2 in connection string"));
        let json = serde_json::to_string(&err.to_problem()).unwrap();
        assert!(!json.contains("hunter2"));
        assert!(!json.contains("detail"));
    }

    #[test]
    fn every_way_diesel_reports_a_lost_connection_is_a_503() {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        let db = |kind, message: &str| D::DatabaseError(kind, Box::new(message.to_owned()));
        for err in [
            db(K::ClosedConnection, "x"),
            db(K::UnableToSendCommand, "another command is already in progress"),
            D::BrokenTransactionManager,
            D::RollbackErrorOnCommit {
                rollback_error: Box::new(db(K::UnableToSendCommand, "no connection to the server")),
                commit_error: Box::new(db(K::Unknown, "server closed the connection unexpectedly")),
            },
            db(
                K::Unknown,
                "FATAL:  terminating connection due to administrator command",
            ),
        ] {
            assert_eq!(Error::from(err).status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(
            Error::from(db(K::Unknown, "syntax error at or near")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn diesel_not_found_is_a_404() {
        assert_eq!(
            Error::from(diesel::result::Error::NotFound).status(),
            StatusCode::NOT_FOUND
        );
    }
}
