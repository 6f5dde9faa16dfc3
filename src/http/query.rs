//! Query strings: parsed into typed values with errors that name the parameter.
//!
//! Each route lists the parameters it knows; any other is a 422, so a typo (`?pateint=`)
//! never silently widens a search.

use std::collections::HashMap;
use std::convert::Infallible;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use warp::Filter;

use crate::error::Error;

/// The raw query string ("" when there is none).
pub fn raw() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// A parsed query string.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses `raw`, refusing parameters not in `known` and repeated parameters.
    pub fn parse(raw: &str, known: &[&'static str]) -> Result<Query, Error> {
        let mut values = HashMap::new();
        for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
            let Some(name) = known.iter().find(|k| **k == name) else {
                return Err(Error::validation(
                    format!("query.{}", truncate(&name)),
                    "is not a known parameter",
                ));
            };
            if values.insert((*name).to_owned(), value.into_owned()).is_some() {
                return Err(Error::validation(
                    format!("query.{name}"),
                    "is given more than once",
                ));
            }
        }
        Ok(Query(values))
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn uuid(&self, name: &'static str) -> Result<Option<Uuid>, Error> {
        self.parsed(name, "must be a UUID", |v| v.parse().ok())
    }

    pub fn datetime(&self, name: &'static str) -> Result<Option<DateTime<Utc>>, Error> {
        self.parsed(
            name,
            "must be an RFC 3339 date-time such as 2026-11-25T09:00:00Z",
            |v| {
                DateTime::parse_from_rfc3339(v)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            },
        )
    }

    pub fn number(&self, name: &'static str, default: i64, min: i64, max: i64) -> Result<i64, Error> {
        Ok(self
            .parsed(name, "must be a whole number in range", |v| {
                v.parse::<i64>().ok().filter(|n| (min..=max).contains(n))
            })?
            .unwrap_or(default))
    }

    pub fn parsed<T>(
        &self,
        name: &'static str,
        reason: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        match self.str(name) {
            None => Ok(None),
            Some(value) => parse(value)
                .map(Some)
                .ok_or_else(|| Error::validation(format!("query.{name}"), reason)),
        }
    }
}

fn truncate(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect()
}

/// An opaque pagination cursor wrapping a row id.
pub fn encode_cursor(id: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("id:{id}"))
}

pub fn decode_cursor(query: &Query, name: &'static str) -> Result<Option<i64>, Error> {
    use base64::Engine;
    query.parsed(name, "is not a cursor this API returned", |v| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v).ok()?;
        String::from_utf8(bytes).ok()?.strip_prefix("id:")?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_parameters_parse_and_unknown_ones_are_refused() {
        let q = Query::parse(
            "patient=0190f0e2-0000-7000-8000-000000000000&limit=5",
            &["patient", "limit"],
        )
        .unwrap();
        assert!(q.uuid("patient").unwrap().is_some());
        assert_eq!(q.number("limit", 50, 1, 500).unwrap(), 5);
        assert!(Query::parse("pateint=x", &["patient"]).is_err());
        assert!(Query::parse("limit=1&limit=2", &["limit"]).is_err());
    }

    #[test]
    fn a_bad_value_names_the_parameter() {
        let q = Query::parse("since=yesterday", &["since"]).unwrap();
        match q.datetime("since") {
            Err(Error::Validation { field, .. }) => assert_eq!(field, "query.since"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cursors_round_trip() {
        let q = Query::parse(&format!("cursor={}", encode_cursor(42)), &["cursor"]).unwrap();
        assert_eq!(decode_cursor(&q, "cursor").unwrap(), Some(42));
    }
}
