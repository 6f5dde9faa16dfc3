//! Identity and access: who is calling, and what their role allows.
//!
//! Every protected route states its rule in one line:
//!
//! ```ignore
//! warp::path!("v1" / "me").and(warp::get()).and(auth::caller(&state))            // anyone signed in
//! warp::path!("v1" / "admin" / "users").and(warp::post()).and(auth::with_role(&state, &[Role::Admin]))
//! ```
//!
//! [`caller`] checks the bearer token (signature, claims) and that its session is
//! still live. The liveness answer is cached per instance for
//! `CAREWIRE_SESSION_CHECK_TTL_MS` (default 1 s): a revocation on this instance takes
//! effect at once, on other instances within that bound.

pub mod password;
pub mod routes;
pub mod sessions;
pub mod throttle;
pub mod tokens;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warp::{Filter, Rejection};

use crate::db::Db;
use crate::error::Error;
use crate::state::AppState;

/// What an account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Patient,
    Provider,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Provider => "provider",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Role, ()> {
        match s {
            "patient" => Ok(Role::Patient),
            "provider" => Ok(Role::Provider),
            "admin" => Ok(Role::Admin),
            _ => Err(()),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub account_id: Uuid,
    pub role: Role,
    pub session_id: Uuid,
}

/// Yields the authenticated caller, or rejects with 401.
pub fn caller(state: &AppState) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone + use<> {
    let state = state.clone();
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let state = state.clone();
        async move {
            authenticate(&state, header.as_deref())
                .await
                .map_err(warp::reject::custom)
        }
    })
}

/// Yields the caller if their role is one of `roles`; 401 without credentials, 403
/// with the wrong role (audited as `access_denied`).
pub fn with_role(
    state: &AppState,
    roles: &'static [Role],
) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone + use<> {
    let audit_state = state.clone();
    caller(state).and(crate::http::request_context()).and_then(
        move |caller: Caller, ctx: crate::http::RequestContext| {
            let state = audit_state.clone();
            async move {
                if roles.contains(&caller.role) {
                    return Ok(caller);
                }
                tracing::info!(account.id = %caller.account_id, role = %caller.role, "forbidden by role");
                crate::audit::record_denial(
                    &state,
                    &ctx,
                    &caller,
                    crate::audit::resource::ROUTE,
                    None,
                    crate::audit::Code::new("role_not_allowed"),
                )
                .await
                .map_err(warp::reject::custom)?;
                Err(warp::reject::custom(Error::Forbidden))
            }
        },
    )
}

async fn authenticate(state: &AppState, header: Option<&str>) -> Result<Caller, Error> {
    authenticate_token(state, bearer_token(header)?).await
}

/// The caller an access token stands for, if it is valid and its session live.
pub async fn authenticate_token(state: &AppState, token: &str) -> Result<Caller, Error> {
    let claims = state.auth.keys.verify(token)?;
    if !state.auth.sessions.is_live(&state.db, claims.sid).await? {
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

fn bearer_token(header: Option<&str>) -> Result<&str, Error> {
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

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::Patient, Role::Provider, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
