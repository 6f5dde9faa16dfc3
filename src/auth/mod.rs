//! Authentication: passwords, access and refresh tokens, sessions and their liveness,
//! login throttling and WebSocket tickets. Who a token stands for is decided here
//! ([`AuthService::authenticate`]); the warp filters that ask it for every request, and
//! the role rules, are in the `access` module above this one.
//!
//! A session's liveness is cached per instance for `CAREWIRE_SESSION_CHECK_TTL_MS`
//! (default 1 s): a revocation on this instance takes effect at once, on other
//! instances within that bound.

pub mod password;
pub mod sessions;
pub mod throttle;
pub mod tickets;
pub mod tokens;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::context::Caller;
use crate::db::Db;
use crate::error::Error;

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(header: Option<&str>) -> Result<&str, Error> {
    let header = header.ok_or(Error::Unauthorized {
        reason: "an access token is required (Authorization: Bearer <token>)",
    })?;
    let (scheme, token) = header.trim().split_once(' ').ok_or(Error::Unauthorized {
        reason: "the Authorization header must be `Bearer <token>`",
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::Unauthorized {
            reason: "the Authorization header must be `Bearer <token>`",
        });
    }
    Ok(token.trim())
}

/// Everything authentication needs at run time.
#[derive(Debug)]
pub struct AuthService {
    pub keys: tokens::TokenKeys,
    pub throttle: throttle::LoginThrottle,
    pub sessions: SessionCache,
    /// A real argon2id hash of a random password: verifying against it when the email
    /// is unknown makes that answer take as long as a wrong password.
    pub dummy_hash: String,
}

/// Per-instance memory of session liveness. A live answer is reused for `ttl`; an
/// ended session is remembered for good (ending is final).
#[derive(Debug)]
pub struct SessionCache {
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, Liveness>>,
}

#[derive(Debug, Clone, Copy)]
enum Liveness {
    Live(Instant),
    Ended,
}

/// Above this many entries the cache starts over, bounding its memory.
const SESSION_CACHE_MAX: usize = 100_000;

impl AuthService {
    /// The caller an access token stands for, if it is valid and its session live.
    pub async fn authenticate(&self, db: &Db, token: &str) -> Result<Caller, Error> {
        let claims = self.keys.verify(token)?;
        if !self.sessions.is_live(db, claims.sid).await? {
            return Err(Error::Unauthorized {
                reason: "the session has ended; sign in again",
            });
        }
        Ok(Caller {
            account_id: claims.sub,
            role: claims.role,
            session_id: claims.sid,
        })
    }
}

impl SessionCache {
    pub fn new(ttl: Duration) -> SessionCache {
        SessionCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the session is live, from memory when fresh enough.
    pub async fn is_live(&self, db: &Db, session_id: Uuid) -> Result<bool, Error> {
        if let Some(known) = self.lookup(session_id) {
            return Ok(known);
        }
        let live = db.run(move |conn| sessions::is_live(conn, session_id)).await?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= SESSION_CACHE_MAX {
            entries.clear();
        }
        entries.insert(
            session_id,
            if live {
                Liveness::Live(Instant::now())
            } else {
                Liveness::Ended
            },
        );
        Ok(live)
    }

    fn lookup(&self, session_id: Uuid) -> Option<bool> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&session_id)? {
            Liveness::Ended => Some(false),
            Liveness::Live(at) if at.elapsed() < self.ttl => Some(true),
            Liveness::Live(_) => None,
        }
    }

    /// Records that sessions ended (on this instance: effective immediately).
    pub fn ended(&self, session_ids: impl IntoIterator<Item = Uuid>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for id in session_ids {
            entries.insert(id, Liveness::Ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_header_yields_a_token() {
        assert_eq!(bearer_token(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some("bearer abc")).unwrap(), "abc");
        assert!(bearer_token(None).is_err());
        assert!(bearer_token(Some("Basic abc")).is_err());
        assert!(bearer_token(Some("Bearer ")).is_err());
        assert!(bearer_token(Some("abc")).is_err());
    }
}
