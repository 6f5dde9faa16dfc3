//! `Idempotency-Key`: a client retrying a change gets the original answer instead of
//! a second change.
//!
//! The key is claimed inside the change's own transaction. A concurrent retry waits on
//! the claimed row, then replays the stored answer; if the original failed, nothing
//! was stored and the retry runs afresh. The same key with a different request is a
//! 422. Keys are scoped to the account and kept 24 hours. Stored answers may hold PHI
//! (a reason for visit), so they are sealed.

use chrono::{Duration, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use http::StatusCode;
use http::header::{ETAG, HeaderName, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use warp::Filter;
use warp::reply::Response;

use crate::crypto::Crypto;
use crate::error::Error;
use crate::schema::idempotency_keys;

/// How long a key is remembered.
pub const RETENTION: Duration = Duration::hours(24);

pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The key a request carries, and what it asked.
#[derive(Debug, Clone)]
pub struct Idempotency {
    key: Option<String>,
    fingerprint: [u8; 32],
}

impl Idempotency {
    /// `what` identifies the request (method, path and body).
    pub fn new(key: Option<String>, method: &str, path: &str, body: &Value) -> Idempotency {
        let fingerprint = Sha256::new()
            .chain_update(method.as_bytes())
            .chain_update(b"\0")
            .chain_update(path.as_bytes())
            .chain_update(b"\0")
            .chain_update(body.to_string().as_bytes())
            .finalize()
            .into();
        Idempotency { key, fingerprint }
    }
}

/// The `Idempotency-Key` header, if present and sane.
pub fn key() -> impl Filter<Extract = (Option<String>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("idempotency-key").and_then(|key: Option<String>| async move {
        match key {
            Some(k) if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| b.is_ascii_graphic()) => {
                Err(warp::reject::custom(Error::bad_request(
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
                )))
            }
            other => Ok(other),
        }
    })
}

/// An answer, as stored for replay.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub etag: Option<i32>,
    /// `Location` of a created resource.
    pub location: Option<String>,
}

impl Answer {
    pub fn into_response(self, replayed: bool) -> Response {
        let mut res = crate::http::reply::json(self.status, &self.body);
        if let Some(version) = self.etag {
            res.headers_mut().insert(ETAG, crate::http::etag::etag(version));
        }
        if let Some(location) = self
            .location
            .as_deref()
            .and_then(|l| HeaderValue::from_str(l).ok())
        {
            res.headers_mut().insert(http::header::LOCATION, location);
        }
        if replayed {
            res.headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
        }
        res
    }
}

/// What claiming a key found.
#[derive(Debug)]
pub enum Claim {
    /// Run the change; store its answer under this row.
    Fresh(Option<Uuid>),
    /// Already done: here is the answer.
    Replay(Answer),
}

fn field(id: Uuid) -> crate::crypto::FieldContext {
    crate::crypto::field("idempotency_keys", "response", id)
}

/// A key already used: what the first request left.
#[derive(Queryable, Selectable)]
#[diesel(table_name = idempotency_keys)]
struct Stored {
    id: Uuid,
    request_hash: Vec<u8>,
    status: Option<i32>,
    response_enc: Option<Vec<u8>>,
    created_at: chrono::DateTime<Utc>,
}

/// Claims the key in the caller's transaction.
pub fn claim(
    conn: &mut PgConnection,
    crypto: &Crypto,
    account: Uuid,
    idem: &Idempotency,
) -> Result<Claim, Error> {
    let Some(key) = &idem.key else {
        return Ok(Claim::Fresh(None));
    };
    let id = Uuid::now_v7();
    let inserted = diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::id.eq(id),
            idempotency_keys::account_id.eq(account),
            idempotency_keys::key.eq(key),
            idempotency_keys::request_hash.eq(idem.fingerprint.as_slice()),
        ))
        .on_conflict((idempotency_keys::account_id, idempotency_keys::key))
        .do_nothing()
        .execute(conn)?;
    if inserted == 1 {
        return Ok(Claim::Fresh(Some(id)));
    }
    // Someone used this key: wait for their transaction, then look.
    let Stored {
        id: existing,
        request_hash: hash,
        status,
        response_enc: response,
        created_at,
    } = idempotency_keys::table
        .filter(idempotency_keys::account_id.eq(account))
        .filter(idempotency_keys::key.eq(key))
        .select(Stored::as_select())
        .for_update()
        .first(conn)?;
    if created_at < Utc::now() - RETENTION {
        diesel::delete(idempotency_keys::table.find(existing)).execute(conn)?;
        return claim(conn, crypto, account, idem);
    }
    if hash != idem.fingerprint {
        return Err(Error::validation(
            "Idempotency-Key",
            "was already used with a different request",
        ));
    }
    match (status, response) {
        (Some(status), Some(sealed)) => {
            let text = crypto.decrypt_string(&field(existing), &sealed)?;
            let stored: Value = serde_json::from_str(&text).map_err(|e| Error::Internal(e.into()))?;
            Ok(Claim::Replay(Answer {
                status: StatusCode::from_u16(u16::try_from(status).unwrap_or(200)).unwrap_or(StatusCode::OK),
                body: stored.get("body").cloned().unwrap_or(Value::Null),
                etag: stored
                    .get("etag")
                    .and_then(Value::as_i64)
                    .and_then(|v| i32::try_from(v).ok()),
                location: stored.get("location").and_then(Value::as_str).map(str::to_owned),
            }))
        }
        // Claimed and committed without an answer cannot happen (both are written in one
        // transaction); treat it as fresh under the same row.
        _ => Ok(Claim::Fresh(Some(existing))),
    }
}

/// Stores the answer of a fresh claim, in the same transaction.
pub fn store(
    conn: &mut PgConnection,
    crypto: &Crypto,
    claim: Option<Uuid>,
    answer: &Answer,
) -> Result<(), Error> {
    let Some(id) = claim else { return Ok(()) };
    let stored = serde_json::json!({ "body": answer.body, "etag": answer.etag, "location": answer.location });
    diesel::update(idempotency_keys::table.find(id))
        .set((
            idempotency_keys::status.eq(Some(i32::from(answer.status.as_u16()))),
            idempotency_keys::response_enc.eq(Some(crypto.encrypt_str(&field(id), &stored.to_string())?)),
        ))
        .execute(conn)?;
    Ok(())
}

/// Forgets keys past their retention.
pub fn prune(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(Utc::now() - RETENTION)))
        .execute(conn)
}
