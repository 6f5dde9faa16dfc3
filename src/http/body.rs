//! Reading request bodies: JSON only, size-capped, with errors that name the field
//! but never echo the input (which may be patient data).

use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use warp::{Filter, Rejection};

use crate::error::Error;

/// Extracts a JSON body of type `T`.
///
/// - not `application/json` (or `application/*+json`) → 415;
/// - longer than `limit` bytes (whatever the Content-Length says) → 413;
/// - not JSON → 400; JSON of the wrong shape → 422 naming the field.
pub fn json<T>(limit: usize) -> impl Filter<Extract = (T,), Error = Rejection> + Clone
where
    T: DeserializeOwned + Send + 'static,
{
    warp::header::optional::<String>("content-type")
        .and_then(|content_type: Option<String>| async move {
            if content_type.as_deref().is_some_and(is_json) {
                Ok(())
            } else {
                Err(warp::reject::custom(Error::UnsupportedMediaType))
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(move |body| async move {
            let bytes = read_limited(body, limit).await.map_err(warp::reject::custom)?;
            parse::<T>(&bytes).map_err(warp::reject::custom)
        })
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn read_limited<S, B>(body: S, limit: usize) -> Result<BytesMut, Error>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| Error::bad_request("the request body could not be read"))?;
        if out.len() + chunk.remaining() > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            out.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

/// Parses JSON into `T`, classifying failures without quoting the input.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::bad_request(
            "the request body is empty; expected a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|err| {
        let path = err.path().to_string();
        classify(err.into_inner(), path)
    })?;
    de.end().map_err(|e| classify(e, String::new()))?;
    Ok(value)
}

fn classify(err: serde_json::Error, path: String) -> Error {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => Error::bad_request(format!(
            "the request body is not valid JSON (line {}, column {})",
            err.line(),
            err.column()
        )),
        Category::Data => {
            // serde's messages can quote the offending value; only the shape of the
            // message is used, and the field name comes from the path.
            let message = err.to_string();
            let at = |field: &str| {
                if path == field || path.ends_with(&format!(".{field}")) {
                    path.clone()
                } else if path.is_empty() || path == "." {
                    field.to_owned()
                } else {
                    format!("{path}.{field}")
                }
            };
            if let Some(field) = backticked_after(&message, "missing field ") {
                Error::validation(at(&field), "is required")
            } else if let Some(field) = backticked_after(&message, "unknown field ") {
                Error::validation(at(&field), "is not a known field")
            } else {
                let field = if path.is_empty() || path == "." {
                    "body".to_owned()
                } else {
                    path
                };
                let reason = if message.starts_with("invalid type") {
                    "has the wrong type"
                } else {
                    "has an invalid value"
                };
                Error::validation(field, reason)
            }
        }
    }
}

/// The `name` in a serde message such as "missing field `name`".
fn backticked_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    let rest = rest.strip_prefix('`')?;
    let end = rest.find('`')?;
    Some(rest[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Signup {
        email: String,
        age: u32,
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::Validation { field, .. } => field.into_owned(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        assert!(matches!(
            parse::<Signup>(b"{\"email\": "),
            Err(Error::BadRequest { .. })
        ));
        assert!(matches!(
            parse::<Signup>(br#"{"email":"a@b.c","age":1} trailing"#),
            Err(Error::BadRequest { .. })
        ));
        assert!(matches!(parse::<Signup>(b""), Err(Error::BadRequest { .. })));
    }

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(
            field_of(parse::<Signup>(br#"{"email":"a@b.c"}"#).unwrap_err()),
            "age"
        );
    }

    #[test]
    fn a_wrong_type_is_named_without_echoing_the_value() {
        let err = parse::<Signup>(br#"{"email":"a@b.c","age":"Ada Lovelace"}"#).unwrap_err();
        let shown = serde_json::to_string(&err.to_problem()).unwrap();
        assert!(shown.contains("\"age\""), "{shown}");
        assert!(!shown.contains("Ada Lovelace"), "{shown}");
    }

    #[test]
    fn an_unknown_field_is_named() {
        assert_eq!(
            field_of(parse::<Signup>(br#"{"email":"a@b.c","age":3,"mail":1}"#).unwrap_err()),
            "mail"
        );
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
