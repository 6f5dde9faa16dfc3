//! Access at the edge: the warp filters that yield the authenticated caller and
//! enforce roles, and [`patch`], the one chain of every PATCH of a versioned resource.
//! Every protected route states its rule in one line:
//!
//! ```ignore
//! warp::path!("v1" / "me").and(warp::get()).and(access::caller(&state))            // anyone signed in
//! warp::path!("v1" / "admin" / "users").and(warp::post()).and(access::with_role(&state, &[Role::Admin]))
//! ```
//!
//! [`caller`] checks the bearer token (signature, claims) and that its session is
//! still live ([`crate::auth::AuthService::authenticate`]).

use warp::{Filter, Rejection};

use crate::audit::{Code, Denial};
use crate::context::{Caller, RequestContext, Role};
use crate::error::Error;
use crate::state::AppState;

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
    caller(state)
        .and(crate::http::request_context())
        .and_then(move |caller: Caller, ctx: RequestContext| {
            let state = audit_state.clone();
            async move {
                if roles.contains(&caller.role) {
                    return Ok(caller);
                }
                tracing::info!(account.id = %caller.account_id, role = %caller.role, "forbidden by role");
                let denial = Denial::forbidden(crate::audit::resource::ROUTE, Code::new("role_not_allowed"));
                Err(warp::reject::custom(
                    denial.refuse(&state.db, &ctx, &caller).await,
                ))
            }
        })
}

async fn authenticate(state: &AppState, header: Option<&str>) -> Result<Caller, Error> {
    let token = crate::auth::bearer_token(header)?;
    state.auth.authenticate(&state.db, token).await
}

/// A JSON merge patch of a versioned resource: who asks, from where, the version
/// they read (`If-Match`), and the members to change. The values may be PHI (a
/// patient's name, birth date): `Debug` shows only the members' names.
pub struct Patch {
    pub caller: Caller,
    pub ctx: RequestContext,
    pub if_match: crate::http::etag::IfMatch,
    pub members: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for Patch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patch")
            .field("caller", &self.caller)
            .field("if_match", &self.if_match)
            .field("members", &self.members.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Patch {
    /// Who, from where, at which version, and what to change.
    pub fn into_parts(
        self,
    ) -> (
        Caller,
        RequestContext,
        crate::http::etag::IfMatch,
        serde_json::Map<String, serde_json::Value>,
    ) {
        (self.caller, self.ctx, self.if_match, self.members)
    }
}

/// The PATCH of a versioned resource, after the route's path: the caller (401), the
/// request's origin, `If-Match` (428 without it) and a JSON object body.
pub fn patch(state: &AppState) -> impl Filter<Extract = (Patch,), Error = Rejection> + Clone + use<> {
    warp::patch()
        .and(caller(state))
        .and(crate::http::request_context())
        .and(crate::http::etag::if_match())
        .and(crate::http::body::json::<
            serde_json::Map<String, serde_json::Value>,
        >(state.settings.http.body_limit))
        .map(|caller, ctx, if_match, members| Patch {
            caller,
            ctx,
            if_match,
            members,
        })
}
