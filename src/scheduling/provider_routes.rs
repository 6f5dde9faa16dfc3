//! Provider routes: profiles, appointment types, availability, and slot search.
//! Profiles, types and slots are public (no PHI); a provider manages their own
//! calendar, admins any.

use chrono::Duration;
use diesel::Connection;
use diesel::pg::PgConnection;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::appointments;
use super::availability::{self, OverrideInput, WindowInput};
use super::providers::{self, ProfileInput, TypeInput};
use crate::access::Patch;
use crate::audit::{self, Code, action, purpose};
use crate::context::RequestContext;
use crate::context::{Caller, Role};
use crate::error::Error;
use crate::http::etag;
use crate::http::openapi::problems;
use crate::http::query::Query;
use crate::http::{body, query, reply, request_context, with_state};
use crate::outbox;
use crate::state::AppState;

/// Longest slot search, in days.
pub const MAX_SLOT_RANGE_DAYS: i64 = 62;

pub fn routes(state: &AppState) -> BoxedFilter<(Response,)> {
    create_provider(state)
        .or(list_providers(state))
        .unify()
        .or(get_provider(state))
        .unify()
        .or(update_provider(state))
        .unify()
        .or(list_types(state))
        .unify()
        .or(create_type(state))
        .unify()
        .or(update_type(state))
        .unify()
        .or(get_availability(state))
        .unify()
        .or(put_weekly(state))
        .unify()
        .or(add_override(state))
        .unify()
        .or(delete_override(state))
        .unify()
        .or(slots(state))
        .unify()
        .boxed()
}

/// A provider manages their own calendar; admins any. Refusals are audited.
async fn may_manage(
    state: &AppState,
    ctx: &RequestContext,
    caller: &Caller,
    provider_id: Uuid,
) -> Result<(), Error> {
    if caller.role == Role::Admin || (caller.role == Role::Provider && caller.account_id == provider_id) {
        return Ok(());
    }
    let denial = audit::Denial::refused(
        Code::new("provider"),
        Code::new("not_own_calendar"),
        "Only the provider and admins manage this calendar.",
    )
    .resource(provider_id);
    Err(denial.refuse(&state.db, ctx, caller).await)
}

/// A change made to a provider's calendar (the profile, types, hours, overrides).
struct Changed<T> {
    value: T,
    /// The resource changed, for the audit event.
    id: Uuid,
    /// Whether free slots may have changed (subscribers are told).
    availability: bool,
}

/// Runs a change of `provider_id`'s calendar: refused and audited unless the caller
/// manages it, before anything else is looked at (after which `work`, input checks
/// included, runs in one transaction with the change's audit
/// event, `action` on `resource`, and, when slots may have changed, the outbox event).
async fn change_calendar<T, F>(
    state: &AppState,
    ctx: &RequestContext,
    caller: &Caller,
    provider_id: Uuid,
    (action, resource): (Code, &'static str),
    work: F,
) -> Result<T, Error>
where
    F: FnOnce(&mut PgConnection) -> Result<Changed<T>, Error> + Send + 'static,
    T: Send + 'static,
{
    may_manage(state, ctx, caller, provider_id).await?;
    let (ctx, caller) = (ctx.clone(), *caller);
    state
        .db
        .run(move |conn| {
            conn.transaction(|conn| {
                let changed = work(conn)?;
                audit::record(conn, &config_event(&ctx, &caller, action, resource, changed.id))?;
                if changed.availability {
                    outbox::availability_changed(conn, provider_id)?;
                }
                Ok(changed.value)
            })
        })
        .await
}

fn config_event(
    ctx: &RequestContext,
    caller: &Caller,
    action: Code,
    resource: &'static str,
    id: Uuid,
) -> audit::AuditEvent {
    audit::event(
        ctx,
        audit::actor(caller),
        action,
        Code::new(resource),
        purpose::OPERATIONS,
    )
    .resource(id)
}

fn provider_or_404(conn: &mut PgConnection, id: Uuid) -> Result<providers::Provider, Error> {
    providers::get(conn, id)?.ok_or(Error::NotFound)
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewProvider {
    account_id: Uuid,
    #[serde(flatten)]
    profile: ProfileInput,
}

/// POST /v1/providers: an admin gives a provider account its public profile.
#[utoipa::path(post, path = "/v1/providers", tag = "providers", request_body = NewProvider, responses((status = 201, description = "Created", body = providers::Provider), problems::Unauthorized, problems::Forbidden, problems::Conflict, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn create_provider(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers")
        .and(warp::post())
        .and(crate::access::with_role(state, &[Role::Admin]))
        .and(request_context())
        .and(body::json::<NewProvider>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_create_provider)
        .boxed()
}

async fn on_create_provider(
    admin: Caller,
    ctx: RequestContext,
    input: NewProvider,
    state: AppState,
) -> Response {
    let result = async {
        let profile = input.profile.validated()?;
        let account = input.account_id;
        state
            .db
            .run(move |conn| {
                conn.transaction(|conn| {
                    let p = providers::create(conn, account, &profile)?;
                    audit::record(
                        conn,
                        &config_event(&ctx, &admin, action::CREATE, "provider", p.id),
                    )?;
                    Ok::<_, Error>(p)
                })
            })
            .await
    }
    .await;
    reply::respond(result.map(|p| etag::json(StatusCode::CREATED, &p)))
}

/// GET /v1/providers: every provider's public profile.
#[utoipa::path(get, path = "/v1/providers", tag = "providers", responses((status = 200, description = "Every provider", body = crate::http::openapi::Items<providers::Provider>)))]
pub(crate) fn list_providers(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers")
        .and(warp::get())
        .and(with_state(state))
        .then(on_list_providers)
        .boxed()
}

async fn on_list_providers(state: AppState) -> Response {
    let result = state.db.run(|conn| Ok(providers::list(conn)?)).await;
    reply::respond(result.map(|items| reply::json(StatusCode::OK, &json!({ "items": items }))))
}

/// GET /v1/providers/{id}: a provider's public profile.
#[utoipa::path(get, path = "/v1/providers/{id}", tag = "providers", params(("id" = uuid::Uuid, Path, description = "Provider id")), responses((status = 200, description = "The profile", body = providers::Provider), problems::NotFound))]
pub(crate) fn get_provider(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers" / Uuid)
        .and(warp::get())
        .and(with_state(state))
        .then(on_get_provider)
        .boxed()
}

async fn on_get_provider(id: Uuid, state: AppState) -> Response {
    let result = state.db.run(move |conn| provider_or_404(conn, id)).await;
    reply::respond(result.map(|p| etag::json(StatusCode::OK, &p)))
}

fn merge<T: Serialize + serde::de::DeserializeOwned>(
    current: &T,
    patch: &serde_json::Map<String, serde_json::Value>,
) -> Result<T, Error> {
    let mut value = serde_json::to_value(current).map_err(|e| Error::Internal(e.into()))?;
    if let Some(object) = value.as_object_mut() {
        for (k, v) in patch {
            object.insert(k.clone(), v.clone());
        }
    }
    crate::http::body::parse(value.to_string().as_bytes())
}

/// PATCH /v1/providers/{id}: the provider (or an admin) edits the profile; needs
/// `If-Match`.
#[utoipa::path(patch, path = "/v1/providers/{id}", tag = "providers", params(("id" = uuid::Uuid, Path, description = "Provider id"), ("If-Match" = String, Header, description = "The ETag you read")), request_body = Object, responses((status = 200, description = "Updated", body = providers::Provider), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::IfMatchRefused, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn update_provider(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers" / Uuid)
        .and(crate::access::patch(state))
        .and(with_state(state))
        .then(on_update_provider)
        .boxed()
}

async fn on_update_provider(id: Uuid, patch: Patch, state: AppState) -> Response {
    let (caller, ctx, if_match, members) = patch.into_parts();
    let result = change_calendar(
        &state,
        &ctx,
        &caller,
        id,
        (action::UPDATE, "provider"),
        move |conn| {
            let current = provider_or_404(conn, id)?;
            let expected = if_match.check(current.version)?;
            let profile = ProfileInput {
                display_name: current.display_name.clone(),
                specialty: current.specialty.clone(),
                time_zone: current.time_zone.clone(),
                bio: current.bio.clone(),
            };
            let input = merge(&profile, &members)?.validated()?;
            Ok(Changed {
                value: providers::update(conn, id, expected, &input)?,
                id,
                // Slots are computed in the provider's time zone.
                availability: input.time_zone != current.time_zone,
            })
        },
    )
    .await;
    reply::respond(result.map(|p| etag::json(StatusCode::OK, &p)))
}

/// GET /v1/providers/{id}/appointment-types: the types offered (active ones).
#[utoipa::path(get, path = "/v1/providers/{id}/appointment-types", tag = "providers", params(("id" = uuid::Uuid, Path, description = "Provider id")), responses((status = 200, description = "Active types", body = crate::http::openapi::Items<providers::AppointmentType>), problems::NotFound))]
pub(crate) fn list_types(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers" / Uuid / "appointment-types")
        .and(warp::get())
        .and(with_state(state))
        .then(on_list_types)
        .boxed()
}

async fn on_list_types(id: Uuid, state: AppState) -> Response {
    let result = state
        .db
        .run(move |conn| {
            provider_or_404(conn, id)?;
            Ok(providers::types(conn, id, true)?)
        })
        .await;
    reply::respond(result.map(|items| reply::json(StatusCode::OK, &json!({ "items": items }))))
}

/// POST /v1/providers/{id}/appointment-types: a new type of appointment.
#[utoipa::path(post, path = "/v1/providers/{id}/appointment-types", tag = "providers", params(("id" = uuid::Uuid, Path, description = "Provider id")), request_body = TypeInput, responses((status = 201, description = "Created", body = providers::AppointmentType), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn create_type(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers" / Uuid / "appointment-types")
        .and(warp::post())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(body::json::<TypeInput>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_create_type)
        .boxed()
}

async fn on_create_type(
    id: Uuid,
    caller: Caller,
    ctx: RequestContext,
    input: TypeInput,
    state: AppState,
) -> Response {
    let result = change_calendar(
        &state,
        &ctx,
        &caller,
        id,
        (action::CREATE, "appointment_type"),
        move |conn| {
            let input = input.validated()?;
            provider_or_404(conn, id)?;
            let t = providers::create_type(conn, id, &input)?;
            Ok(Changed {
                id: t.id,
                value: t,
                availability: true,
            })
        },
    )
    .await;
    reply::respond(result.map(|t| etag::json(StatusCode::CREATED, &t)))
}

/// PATCH /v1/providers/{id}/appointment-types/{type_id}: edits a type (set `active`
/// to false to stop offering it); needs `If-Match`.
#[utoipa::path(patch, path = "/v1/providers/{id}/appointment-types/{type_id}", tag = "providers", params(("id" = uuid::Uuid, Path, description = "Provider id"), ("type_id" = uuid::Uuid, Path, description = "Appointment type id"), ("If-Match" = String, Header, description = "The ETag you read")), request_body = Object, responses((status = 200, description = "Updated", body = providers::AppointmentType), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::IfMatchRefused, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn update_type(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers" / Uuid / "appointment-types" / Uuid)
        .and(crate::access::patch(state))
        .and(with_state(state))
        .then(on_update_type)
        .boxed()
}

async fn on_update_type(id: Uuid, type_id: Uuid, patch: Patch, state: AppState) -> Response {
    let (caller, ctx, if_match, members) = patch.into_parts();
    let result = change_calendar(
        &state,
        &ctx,
        &caller,
        id,
        (action::UPDATE, "appointment_type"),
        move |conn| {
            let t = providers::get_type(conn, id, type_id)?.ok_or(Error::NotFound)?;
            let expected = if_match.check(t.version)?;
            let reminder_offsets_minutes = t.reminder_offsets();
            let current = TypeInput {
                name: t.name,
                duration_minutes: t.duration_minutes,
                buffer_before_minutes: t.buffer_before_minutes,
                buffer_after_minutes: t.buffer_after_minutes,
                modality: t.modality,
                min_notice_minutes: t.min_notice_minutes,
                booking_horizon_days: t.booking_horizon_days,
                max_per_day: t.max_per_day,
                cancellation_cutoff_minutes: t.cancellation_cutoff_minutes,
                active: t.active,
                reminder_offsets_minutes,
            };
            let input = merge(&current, &members)?.validated()?;
            Ok(Changed {
                value: providers::update_type(conn, id, type_id, expected, &input)?,
                id: type_id,
                availability: true,
            })
        },
    )
    .await;
    reply::respond(result.map(|t| etag::json(StatusCode::OK, &t)))
}

/// GET /v1/providers/{id}/availability: weekly hours and overrides.
#[utoipa::path(get, path = "/v1/providers/{id}/availability", tag = "providers", params(("id" = uuid::Uuid, Path, description = "Provider id")), responses((status = 200, description = "Weekly hours and overrides", body = AvailabilityDoc), problems::Unauthorized, problems::Forbidden, problems::NotFound), security(("bearer" = [])))]
pub(crate) fn get_availability(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers" / Uuid / "availability")
        .and(warp::get())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(with_state(state))
        .then(on_get_availability)
        .boxed()
}

async fn on_get_availability(id: Uuid, caller: Caller, ctx: RequestContext, state: AppState) -> Response {
    let result = async {
        may_manage(&state, &ctx, &caller, id).await?;
        state
            .db
            .run(move |conn| {
                let p = provider_or_404(conn, id)?;
                let weekly: Vec<WindowInput> = availability::weekly(conn, id)?
                    .iter()
                    .map(WindowInput::from_window)
                    .collect();
                let overrides = availability::overrides(conn, id, None)?;
                Ok(json!({ "time_zone": p.time_zone, "weekly": weekly, "overrides": overrides }))
            })
            .await
    }
    .await;
    reply::respond(result.map(|body| reply::json(StatusCode::OK, &body)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WeeklyInput {
    windows: Vec<WindowInput>,
}

/// PUT /v1/providers/{id}/availability/weekly: replaces the weekly hours.
#[utoipa::path(put, path = "/v1/providers/{id}/availability/weekly", tag = "providers", params(("id" = uuid::Uuid, Path, description = "Provider id")), request_body = WeeklyInput, responses((status = 200, description = "Replaced"), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn put_weekly(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers" / Uuid / "availability" / "weekly")
        .and(warp::put())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(body::json::<WeeklyInput>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_put_weekly)
        .boxed()
}

async fn on_put_weekly(
    id: Uuid,
    caller: Caller,
    ctx: RequestContext,
    input: WeeklyInput,
    state: AppState,
) -> Response {
    // Input is checked once the caller may manage the calendar (inside the change).
    let result = change_calendar(
        &state,
        &ctx,
        &caller,
        id,
        (action::UPDATE, "availability"),
        move |conn| {
            if input.windows.len() > 100 {
                return Err(Error::validation("windows", "at most 100 windows"));
            }
            let windows = input
                .windows
                .iter()
                .enumerate()
                .map(|(i, w)| w.parse(i))
                .collect::<Result<Vec<_>, _>>()?;
            provider_or_404(conn, id)?;
            availability::replace_weekly(conn, id, &windows)?;
            let weekly: Vec<WindowInput> = windows.iter().map(WindowInput::from_window).collect();
            Ok(Changed {
                value: json!({ "weekly": weekly }),
                id,
                availability: true,
            })
        },
    )
    .await;
    reply::respond(result.map(|body| reply::json(StatusCode::OK, &body)))
}

/// POST /v1/providers/{id}/availability/overrides: extra hours or blocked time.
#[utoipa::path(post, path = "/v1/providers/{id}/availability/overrides", tag = "providers", params(("id" = uuid::Uuid, Path, description = "Provider id")), request_body = OverrideInput, responses((status = 201, description = "Added", body = availability::OverrideView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn add_override(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers" / Uuid / "availability" / "overrides")
        .and(warp::post())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(body::json::<OverrideInput>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_add_override)
        .boxed()
}

async fn on_add_override(
    id: Uuid,
    caller: Caller,
    ctx: RequestContext,
    input: OverrideInput,
    state: AppState,
) -> Response {
    let result = change_calendar(
        &state,
        &ctx,
        &caller,
        id,
        (action::CREATE, "availability"),
        move |conn| {
            let o = input.parse()?;
            provider_or_404(conn, id)?;
            let view = availability::add_override(conn, id, &o)?;
            Ok(Changed {
                id: view.id,
                value: view,
                availability: true,
            })
        },
    )
    .await;
    reply::respond(result.map(|view| reply::json(StatusCode::CREATED, &view)))
}

/// DELETE /v1/providers/{id}/availability/overrides/{override_id}
#[utoipa::path(delete, path = "/v1/providers/{id}/availability/overrides/{override_id}", tag = "providers", params(("id" = uuid::Uuid, Path, description = "Provider id"), ("override_id" = uuid::Uuid, Path, description = "Override id")), responses((status = 204, description = "Removed"), problems::Unauthorized, problems::Forbidden, problems::NotFound), security(("bearer" = [])))]
pub(crate) fn delete_override(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers" / Uuid / "availability" / "overrides" / Uuid)
        .and(warp::delete())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(with_state(state))
        .then(on_delete_override)
        .boxed()
}

async fn on_delete_override(
    id: Uuid,
    override_id: Uuid,
    caller: Caller,
    ctx: RequestContext,
    state: AppState,
) -> Response {
    let result = change_calendar(
        &state,
        &ctx,
        &caller,
        id,
        (action::DELETE, "availability"),
        move |conn| {
            if !availability::delete_override(conn, id, override_id)? {
                return Err(Error::NotFound);
            }
            Ok(Changed {
                value: (),
                id: override_id,
                availability: true,
            })
        },
    )
    .await;
    reply::respond(result.map(|()| reply::empty(StatusCode::NO_CONTENT)))
}

/// GET /v1/providers/{id}/slots?type=&from=&to=: free slots for an appointment type, as
/// UTC instants with the provider's local time; at most 62 days at once.
#[utoipa::path(get, path = "/v1/providers/{id}/slots", tag = "providers", params(("id" = uuid::Uuid, Path, description = "Provider id"), ("type" = uuid::Uuid, Query, description = "Appointment type"), ("from" = Option<String>, Query, description = "RFC 3339; default now"), ("to" = Option<String>, Query, description = "RFC 3339; default from + 7 days; at most 62 days after from")), responses((status = 200, description = "Free slots", body = SlotsDoc), problems::BadRequest, problems::NotFound, problems::Invalid))]
pub(crate) fn slots(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "providers" / Uuid / "slots")
        .and(warp::get())
        .and(query::raw())
        .and(with_state(state))
        .then(on_slots)
        .map(reply::respond)
        .boxed()
}

async fn on_slots(id: Uuid, raw: String, state: AppState) -> Result<Response, Error> {
    let q = Query::parse(&raw, &["type", "from", "to"])?;
    let type_id = q
        .uuid("type")?
        .ok_or_else(|| Error::validation("query.type", "is required (an appointment type id)"))?;
    let now = state.clock.now();
    let from = q.datetime("from")?.unwrap_or(now);
    let to = q.datetime("to")?.unwrap_or(from + Duration::days(7));
    if to <= from {
        return Err(Error::bad_request("`to` must be after `from`"));
    }
    if to - from > Duration::days(MAX_SLOT_RANGE_DAYS) {
        return Err(Error::bad_request(format!(
            "the range is longer than {MAX_SLOT_RANGE_DAYS} days; ask for a shorter one"
        )));
    }
    let body = state
        .db
        .run(move |conn| {
            let p = provider_or_404(conn, id)?;
            let t = providers::get_type(conn, id, type_id)?
                .filter(|t| t.active)
                .ok_or(Error::NotFound)?;
            let found = appointments::free_slots(conn, &p, &t, from, to, now, None)?;
            Ok(json!({
                "provider_id": id,
                "type_id": type_id,
                "time_zone": p.time_zone,
                "duration_minutes": t.duration_minutes,
                "slots": found,
            }))
        })
        .await?;
    let mut res = reply::json(StatusCode::OK, &body);
    // Availability changes from second to second; never cache.
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

/// Free slots of one appointment type.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlotsDoc {
    pub provider_id: uuid::Uuid,
    pub type_id: uuid::Uuid,
    pub time_zone: String,
    pub duration_minutes: i32,
    pub slots: Vec<crate::scheduling::slots::Slot>,
}

/// A provider's hours.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AvailabilityDoc {
    pub time_zone: String,
    pub weekly: Vec<crate::scheduling::availability::WindowInput>,
    pub overrides: Vec<crate::scheduling::availability::OverrideView>,
}
