//! Signing in and out of an account: `POST /v1/auth/register|login|refresh|logout`.
//! The tokens, sessions and password hashing they use are [`crate::auth`]'s.

use diesel::Connection;
use http::StatusCode;
use http::header::{HeaderValue, LOCATION};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::accounts::{self, Email};
use crate::audit::{self, Code, DetailValue};
use crate::auth::password;
use crate::auth::sessions::{self, Refreshed, RevokeReason};
use crate::context::RequestContext;
use crate::context::{Caller, Role};
use crate::error::Error;
use crate::http::openapi::problems;
use crate::http::{body, reply, request_context, with_state};
use crate::state::AppState;

pub fn routes(state: &AppState) -> BoxedFilter<(Response,)> {
    register(state)
        .or(login(state))
        .unify()
        .or(refresh(state))
        .unify()
        .or(logout(state))
        .unify()
        .boxed()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

/// What login and refresh return.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_token_expires_in: u64,
    pub account_id: Uuid,
    pub role: Role,
}

fn token_response(
    state: &AppState,
    account_id: Uuid,
    role: Role,
    session_id: Uuid,
    refresh_token: String,
) -> Result<Response, Error> {
    let keys = &state.auth.keys;
    let body = TokenResponse {
        access_token: keys.issue_access(account_id, role, session_id)?,
        token_type: "Bearer",
        expires_in: keys.access_ttl.as_secs(),
        refresh_token,
        refresh_token_expires_in: keys.refresh_ttl.as_secs(),
        account_id,
        role,
    };
    Ok(reply::json(StatusCode::OK, &body))
}

const BAD_CREDENTIALS: Error = Error::Unauthorized {
    reason: "the email or password is wrong",
};

/// POST /v1/auth/register: a patient creates their own account.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = Credentials, responses((status = 201, description = "Account created", body = crate::accounts::AccountView), problems::Conflict, problems::Invalid, problems::TooManyAttempts))]
pub(crate) fn register(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "auth" / "register")
        .and(warp::post())
        .and(request_context())
        .and(body::json::<Credentials>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_register)
        .map(reply::respond)
        .boxed()
}

async fn on_register(ctx: RequestContext, input: Credentials, state: AppState) -> Result<Response, Error> {
    state.auth.throttle.check_ip(ctx.client_ip)?;
    let email = Email::parse(&input.email)?;
    let password_hash = crate::accounts::routes::hash_new_password(&email, input.password).await?;
    let view = state
        .with_db(move |conn, state| {
            conn.transaction(|conn| {
                let account = accounts::create(conn, &state.crypto, &email, Role::Patient, password_hash)?;
                let event = audit::event(
                    &ctx,
                    audit::user(account.id, Role::Patient),
                    audit::action::CREATE,
                    audit::resource::ACCOUNT,
                    audit::purpose::PATIENT_REQUEST,
                )
                .resource(account.id)
                .detail(
                    Code::new("via"),
                    DetailValue::Code(Code::new("self_registration")),
                );
                audit::record(conn, &event)?;
                accounts::view(&state.crypto, &account)
            })
        })
        .await?;
    tracing::info!(account.id = %view.id, "patient registered");
    let mut res = reply::json(StatusCode::CREATED, &view);
    res.headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/v1/me"));
    Ok(res)
}

/// POST /v1/auth/login: email and password for an access and a refresh token.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = Credentials, responses((status = 200, description = "Tokens", body = TokenResponse), problems::Unauthorized, problems::TooManyAttempts))]
pub(crate) fn login(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "auth" / "login")
        .and(warp::post())
        .and(request_context())
        .and(body::json::<Credentials>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_login)
        .map(reply::respond)
        .boxed()
}

async fn on_login(ctx: RequestContext, input: Credentials, state: AppState) -> Result<Response, Error> {
    let email = Email::parse(&input.email).map_err(|_| BAD_CREDENTIALS)?;
    let index = accounts::email_index(&state.crypto, &email);
    state.auth.throttle.check(&index, ctx.client_ip)?;

    let account = state
        .with_db(move |conn, state| accounts::find_by_email(conn, &state.crypto, &email))
        .await?;

    // Unknown email, disabled account or wrong password: the same answer after the
    // same argon2 work, so neither the body nor the timing tells them apart. Only the
    // audit trail records which it was.
    let hash = account
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| state.auth.dummy_hash.clone());
    let password = input.password;
    let matches = tokio::task::spawn_blocking(move || password::verify(&password, &hash))
        .await
        .map_err(|_| Error::internal("password verification was interrupted"))?;
    let (account, role) = match account {
        Some(account) if matches && account.disabled_at.is_none() => {
            let role = account.role()?;
            (account, role)
        }
        other => {
            metrics::counter!("auth_login_failures_total").increment(1);
            let (actor, reason) = match &other {
                None => (audit::Actor::Anonymous, Code::new("unknown_email")),
                Some(a) => (
                    audit::user(a.id, a.role()?),
                    if a.disabled_at.is_some() {
                        Code::new("account_disabled")
                    } else {
                        Code::new("wrong_password")
                    },
                ),
            };
            tracing::info!(account.id = ?other.map(|a| a.id), "login failed");
            let event = audit::event(
                &ctx,
                actor,
                audit::action::LOGIN_FAILED,
                audit::resource::SESSION,
                audit::purpose::SYSTEM_ADMINISTRATION,
            )
            .failed(reason);
            state.db.run(move |conn| audit::record(conn, &event)).await?;
            return Err(BAD_CREDENTIALS);
        }
    };
    let account_id = account.id;
    let ttl = state.auth.keys.refresh_ttl;
    let started = state
        .db
        .run(move |conn| {
            conn.transaction(|conn| {
                let started = sessions::start(conn, account_id, ttl)?;
                let event = audit::event(
                    &ctx,
                    audit::user(account_id, role),
                    audit::action::LOGIN,
                    audit::resource::SESSION,
                    audit::purpose::SYSTEM_ADMINISTRATION,
                )
                .resource(started.session_id);
                audit::record(conn, &event)?;
                Ok::<_, Error>(started)
            })
        })
        .await?;
    tracing::info!(account.id = %account_id, session.id = %started.session_id, "signed in");
    token_response(
        &state,
        account_id,
        role,
        started.session_id,
        started.refresh_token,
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    #[schema(value_type = String, format = Password)]
    refresh_token: SecretString,
}

/// POST /v1/auth/refresh: exchanges a refresh token for new tokens (rotation).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest, responses((status = 200, description = "New tokens (the old refresh token is spent)", body = TokenResponse), problems::Unauthorized))]
pub(crate) fn refresh(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "auth" / "refresh")
        .and(warp::post())
        .and(request_context())
        .and(body::json::<RefreshRequest>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_refresh)
        .map(reply::respond)
        .boxed()
}

async fn on_refresh(ctx: RequestContext, input: RefreshRequest, state: AppState) -> Result<Response, Error> {
    use secrecy::ExposeSecret;
    let presented = input.refresh_token.expose_secret().to_owned();
    let ttl = state.auth.keys.refresh_ttl;
    // Rotation (or, on reuse, revocation of the family) commits with its audit event.
    let outcome = state
        .db
        .run(move |conn| {
            conn.transaction(|conn| {
                let outcome = sessions::rotate(conn, &presented, ttl)?;
                let event = |account_id, role, session_id| {
                    audit::event(
                        &ctx,
                        audit::user(account_id, role),
                        audit::action::TOKEN_REFRESH,
                        audit::resource::SESSION,
                        audit::purpose::SYSTEM_ADMINISTRATION,
                    )
                    .resource(session_id)
                };
                match &outcome {
                    Refreshed::Rotated {
                        account_id,
                        role,
                        session_id,
                        ..
                    } => audit::record(conn, &event(*account_id, *role, *session_id))?,
                    Refreshed::Reused {
                        account_id,
                        role,
                        session_id,
                    } => audit::record(
                        conn,
                        &event(*account_id, *role, *session_id)
                            .failed(Code::new("token_reuse_session_revoked")),
                    )?,
                    Refreshed::Invalid => {}
                }
                Ok::<_, Error>(outcome)
            })
        })
        .await?;
    match outcome {
        Refreshed::Rotated {
            account_id,
            role,
            session_id,
            refresh_token,
        } => token_response(&state, account_id, role, session_id, refresh_token),
        Refreshed::Reused {
            account_id,
            session_id,
            ..
        } => {
            state.auth.sessions.ended([session_id]);
            metrics::counter!("auth_refresh_reuse_total").increment(1);
            tracing::warn!(account.id = %account_id, session.id = %session_id, "refresh token reused; session revoked");
            Err(Error::Unauthorized {
                reason: "this refresh token was already used; the session has been revoked",
            })
        }
        Refreshed::Invalid => Err(Error::Unauthorized {
            reason: "the refresh token is invalid or expired",
        }),
    }
}

/// POST /v1/auth/logout: ends the caller's session (its refresh token and every
/// access token issued in it).
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", responses((status = 204, description = "Session ended"), problems::Unauthorized), security(("bearer" = [])))]
pub(crate) fn logout(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "auth" / "logout")
        .and(warp::post())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(with_state(state))
        .then(on_logout)
        .boxed()
}

async fn on_logout(caller: Caller, ctx: RequestContext, state: AppState) -> Response {
    let session_id = caller.session_id;
    let result = state
        .db
        .run(move |conn| {
            conn.transaction(|conn| {
                sessions::revoke(conn, session_id, RevokeReason::Logout)?;
                let event = audit::event(
                    &ctx,
                    audit::actor(&caller),
                    audit::action::LOGOUT,
                    audit::resource::SESSION,
                    audit::purpose::SYSTEM_ADMINISTRATION,
                )
                .resource(session_id);
                audit::record(conn, &event)
            })
        })
        .await;
    reply::respond(result.map(|()| {
        state.auth.sessions.ended([session_id]);
        tracing::info!(account.id = %caller.account_id, session.id = %session_id, "signed out");
        reply::empty(StatusCode::NO_CONTENT)
    }))
}
