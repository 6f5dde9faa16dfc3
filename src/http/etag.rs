//! ETags and `If-Match`: optimistic concurrency on versioned resources.
//!
//! A resource's ETag is its version number in quotes (`"3"`). Changes must send
//! `If-Match` with it: no header is a 428, a stale one a 412.

use http::header::{ETAG, HeaderValue};
use warp::Filter;
use warp::reply::Response;

use crate::error::Error;

/// The ETag of `version`.
pub fn etag(version: i32) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// Sets the ETag header.
pub fn with_etag(mut res: Response, version: i32) -> Response {
    res.headers_mut().insert(ETAG, etag(version));
    res
}

/// A resource with a version, sent with its ETag.
pub trait Versioned {
    fn version(&self) -> i32;
}

/// `value` as JSON with `status` and its ETag: every read or change of a versioned
/// resource answers this way, so the next change can send `If-Match`.
pub fn json<T: serde::Serialize + Versioned>(status: http::StatusCode, value: &T) -> Response {
    with_etag(crate::http::reply::json(status, value), value.version())
}

/// What `If-Match` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Version(i32),
}

impl IfMatch {
    pub fn matches(self, version: i32) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Version(v) => v == version,
        }
    }

    /// The version to update from: the current one if it matches, else 412.
    pub fn check(self, current: i32) -> Result<i32, Error> {
        if self.matches(current) {
            Ok(current)
        } else {
            Err(Error::PreconditionFailed)
        }
    }
}

/// The `If-Match` header, required.
pub fn if_match() -> impl Filter<Extract = (IfMatch,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("if-match").and_then(|value: Option<String>| async move {
        parse(value.as_deref()).map_err(warp::reject::custom)
    })
}

fn parse(value: Option<&str>) -> Result<IfMatch, Error> {
    let value = value.ok_or(Error::PreconditionRequired)?.trim();
    if value == "*" {
        return Ok(IfMatch::Any);
    }
    // Only one tag: a list of several would mean "any of these versions".
    let tag = value.strip_prefix("W/").unwrap_or(value);
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse::<i32>().ok())
        .map(IfMatch::Version)
        .ok_or_else(|| Error::bad_request("If-Match must be an ETag this API returned, such as \"3\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_parses_tags_and_requires_a_header() {
        assert_eq!(parse(Some("\"3\"")).unwrap(), IfMatch::Version(3));
        assert_eq!(parse(Some("W/\"3\"")).unwrap(), IfMatch::Version(3));
        assert_eq!(parse(Some("*")).unwrap(), IfMatch::Any);
        assert!(matches!(parse(None), Err(Error::PreconditionRequired)));
        assert!(matches!(parse(Some("3")), Err(Error::BadRequest { .. })));
    }

    #[test]
    fn a_stale_version_fails_the_precondition() {
        assert!(IfMatch::Version(2).check(3).is_err());
        assert_eq!(IfMatch::Version(3).check(3).unwrap(), 3);
    }
}
