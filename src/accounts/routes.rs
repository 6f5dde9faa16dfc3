//! Account routes: the caller's own account, and account administration.

use diesel::Connection;
use http::StatusCode;
use http::header::{HeaderValue, LOCATION};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::Email;
use crate::audit::{self, Code, DetailValue};
use crate::auth::password;
use crate::context::RequestContext;
use crate::context::{Caller, Role};
use crate::error::Error;
use crate::http::openapi::problems;
use crate::http::{body, reply, request_context, with_state};
use crate::state::AppState;

const ADMINS: &[Role] = &[Role::Admin];

pub fn routes(state: &AppState) -> BoxedFilter<(Response,)> {
    me(state)
        .or(create_user(state))
        .unify()
        .or(get_user(state))
        .unify()
        .or(disable_user(state))
        .unify()
        .boxed()
}

/// The signed-in account, with the ids a client needs next.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeView {
    #[serde(flatten)]
    pub account: super::AccountView,
    /// A patient's own patient record; absent until they create it
    /// (`POST /v1/patients`), which booking needs first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<Uuid>,
    /// A provider's public profile (`/v1/providers/{id}`, the id of their account);
    /// absent until an admin creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<Uuid>,
}

/// GET /v1/me: the signed-in account (its email is personal data: the read is audited).
#[utoipa::path(get, path = "/v1/me", tag = "accounts", responses((status = 200, description = "The signed-in account", body = MeView), problems::Unauthorized), security(("bearer" = [])))]
pub(crate) fn me(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "me")
        .and(warp::get())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(with_state(state))
        .then(on_me)
        .boxed()
}

async fn on_me(caller: Caller, ctx: RequestContext, state: AppState) -> Response {
    reply::respond(
        state
            .with_db(move |conn, state| {
                conn.transaction(|conn| {
                    let account = super::find(conn, caller.account_id)?;
                    let event = audit::event(
                        &ctx,
                        audit::actor(&caller),
                        audit::action::READ,
                        audit::resource::ACCOUNT,
                        audit::purpose::PATIENT_REQUEST,
                    )
                    .resource(account.id);
                    audit::record(conn, &event)?;
                    // Only a patient has a record of their own, and only a
                    // provider a profile: one query at most.
                    let (patient_id, provider_id) = match account.role()? {
                        Role::Patient => (super::patient_id(conn, account.id)?, None),
                        Role::Provider => (None, super::provider_id(conn, account.id)?),
                        Role::Admin => (None, None),
                    };
                    Ok::<_, Error>(MeView {
                        account: super::view(&state.crypto, &account)?,
                        patient_id,
                        provider_id,
                    })
                })
            })
            .await
            .map(|view| reply::json(StatusCode::OK, &view)),
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    role: Role,
    /// Providers' and admins' name as others see it.
    #[serde(default)]
    display_name: Option<String>,
}

/// POST /v1/admin/users: an admin creates a provider, admin or patient account.
#[utoipa::path(post, path = "/v1/admin/users", tag = "accounts", request_body = CreateUser, responses((status = 201, description = "Account created", body = super::AccountView), problems::Unauthorized, problems::Forbidden, problems::Conflict, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn create_user(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "admin" / "users")
        .and(warp::post())
        .and(crate::access::with_role(state, ADMINS))
        .and(request_context())
        .and(body::json::<CreateUser>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_create_user)
        .map(reply::respond)
        .boxed()
}

async fn on_create_user(
    admin: Caller,
    ctx: RequestContext,
    input: CreateUser,
    state: AppState,
) -> Result<Response, Error> {
    let email = Email::parse(&input.email)?;
    let display_name = super::parse_display_name(input.role, input.display_name.as_deref())?;
    let password_hash = hash_new_password(&email, input.password).await?;
    let role = input.role;
    let view = state
        .with_db(move |conn, state| {
            conn.transaction(|conn| {
                let account = super::create(conn, &state.crypto, &email, role, password_hash)?;
                if display_name.is_some() {
                    super::set_display_name(conn, account.id, display_name.as_deref())?;
                }
                let event = audit::event(
                    &ctx,
                    audit::actor(&admin),
                    audit::action::CREATE,
                    audit::resource::ACCOUNT,
                    audit::purpose::SYSTEM_ADMINISTRATION,
                )
                .resource(account.id)
                .detail(Code::new("role"), DetailValue::Code(audit::role_code(role)));
                audit::record(conn, &event)?;
                super::view(&state.crypto, &account)
            })
        })
        .await?;
    tracing::info!(admin.id = %admin.account_id, account.id = %view.id, role = %view.role, "account created by admin");
    let mut res = reply::json(StatusCode::CREATED, &view);
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/admin/users/{}", view.id)) {
        res.headers_mut().insert(LOCATION, location);
    }
    Ok(res)
}

/// Checks the password policy and hashes, on the blocking pool.
pub async fn hash_new_password(email: &Email, password: SecretString) -> Result<String, Error> {
    let hints: Vec<String> = email.password_hints().into_iter().map(str::to_owned).collect();
    tokio::task::spawn_blocking(move || {
        let hints: Vec<&str> = hints.iter().map(String::as_str).collect();
        password::check_policy(&password, &hints)?;
        password::hash(&password)
    })
    .await
    .map_err(|_| Error::internal("password hashing was interrupted"))?
}

/// GET /v1/admin/users/{id}: one account.
#[utoipa::path(get, path = "/v1/admin/users/{id}", tag = "accounts", params(("id" = uuid::Uuid, Path, description = "Account id")), responses((status = 200, description = "The account", body = super::AccountView), problems::Unauthorized, problems::Forbidden, problems::NotFound), security(("bearer" = [])))]
pub(crate) fn get_user(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "admin" / "users" / Uuid)
        .and(warp::get())
        .and(crate::access::with_role(state, ADMINS))
        .and(request_context())
        .and(with_state(state))
        .then(on_get_user)
        .boxed()
}

async fn on_get_user(id: Uuid, admin: Caller, ctx: RequestContext, state: AppState) -> Response {
    reply::respond(
        state
            .with_db(move |conn, state| {
                conn.transaction(|conn| {
                    let account = super::find(conn, id)?;
                    let event = audit::event(
                        &ctx,
                        audit::actor(&admin),
                        audit::action::READ,
                        audit::resource::ACCOUNT,
                        audit::purpose::SYSTEM_ADMINISTRATION,
                    )
                    .resource(id);
                    audit::record(conn, &event)?;
                    super::view(&state.crypto, &account)
                })
            })
            .await
            .map(|view| reply::json(StatusCode::OK, &view)),
    )
}

/// POST /v1/admin/users/{id}/disable: disables an account and ends its sessions at
/// once (its access tokens stop working on this instance immediately, elsewhere
/// within the session-check bound).
#[utoipa::path(post, path = "/v1/admin/users/{id}/disable", tag = "accounts", params(("id" = uuid::Uuid, Path, description = "Account id")), responses((status = 200, description = "Disabled; its sessions ended", body = super::AccountView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict), security(("bearer" = [])))]
pub(crate) fn disable_user(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "admin" / "users" / Uuid / "disable")
        .and(warp::post())
        .and(crate::access::with_role(state, ADMINS))
        .and(request_context())
        .and(with_state(state))
        .then(on_disable_user)
        .map(reply::respond)
        .boxed()
}

async fn on_disable_user(
    id: Uuid,
    admin: Caller,
    ctx: RequestContext,
    state: AppState,
) -> Result<Response, Error> {
    if id == admin.account_id {
        return Err(Error::conflict(
            "cannot_disable_self",
            "an admin cannot disable their own account",
        ));
    }
    let (view, ended) = state
        .with_db(move |conn, state| {
            conn.transaction(|conn| {
                let (account, ended) = super::disable(conn, id)?;
                let event = audit::event(
                    &ctx,
                    audit::actor(&admin),
                    audit::action::UPDATE,
                    audit::resource::ACCOUNT,
                    audit::purpose::SYSTEM_ADMINISTRATION,
                )
                .resource(id)
                .detail(Code::new("change"), DetailValue::Code(Code::new("disabled")))
                .detail(
                    Code::new("sessions_ended"),
                    DetailValue::Count(ended.len() as i64),
                );
                audit::record(conn, &event)?;
                Ok((super::view(&state.crypto, &account)?, ended))
            })
        })
        .await?;
    let sessions_ended = ended.len();
    state.auth.sessions.ended(ended);
    tracing::info!(admin.id = %admin.account_id, account.id = %id, sessions_ended, "account disabled");
    Ok(reply::json(StatusCode::OK, &view))
}
