//! Appointment routes. Every change runs in one transaction with its audit event, its
//! outbox event and its `Idempotency-Key`; every change of an existing appointment needs
//! `If-Match`. A patient sees only their own appointments, a provider only theirs,
//! admins all; anything else is a 404, and the attempt is audited.

use chrono::{DateTime, Duration, Utc};
use diesel::Connection;
use diesel::pg::PgConnection;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::appointments::{self, AppointmentRow, Cancellation, ListFilter, NewBooking};
use super::idempotency::{self, Answer, Claim, Idempotency};
use super::providers;
use super::reasons::{CancellationReason, VisitReason};
use super::rules::{self, Facts, Refusal, Standing};
use super::status::{Status, Transition};
use crate::audit::{self, Code, Denial, DetailValue, action, resource};
use crate::context::RequestContext;
use crate::context::{Caller, Role};
use crate::error::Error;
use crate::http::etag::{self, IfMatch};
use crate::http::openapi::problems;
use crate::http::query::{self, Query};
use crate::http::{body, reply, request_context, with_state};
use crate::state::AppState;

pub fn routes(state: &AppState) -> BoxedFilter<(Response,)> {
    create(state)
        .or(list(state))
        .unify()
        .or(read(state))
        .unify()
        .or(reschedule(state))
        .unify()
        .or(cancel(state))
        .unify()
        .or(confirm(state))
        .unify()
        .or(check_in(state))
        .unify()
        .or(no_show(state))
        .unify()
        .or(complete(state))
        .unify()
        .or(entered_in_error(state))
        .unify()
        .or(accept(state))
        .unify()
        .boxed()
}

/// What a booking's audit event says of the record access it gives.
fn record_access(row: &AppointmentRow) -> Code {
    Code::new(if row.opens_record {
        "opens_record"
    } else {
        "awaits_patient"
    })
}

/// How the caller stands to `row` (the patient's account is looked up for patients
/// only).
fn standing(conn: &mut PgConnection, caller: &Caller, row: &AppointmentRow) -> Result<Standing, Error> {
    let patient_account = match caller.role {
        Role::Patient => appointments::patient_account(conn, row.patient_id)?,
        Role::Provider | Role::Admin => None,
    };
    Ok(Standing::of(caller, row.provider_id, patient_account))
}

/// What the rules need to know about `row`.
fn facts(row: &AppointmentRow, kind: &providers::AppointmentType) -> Facts {
    Facts {
        status: row.status(),
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        hold_expires_at: row.hold_expires_at,
        cancellation_cutoff_minutes: kind.cancellation_cutoff_minutes,
    }
}

/// Why a change stopped: a denial to audit before answering, or an error.
#[derive(Debug)]
enum Failure {
    Denied(Box<Denial>),
    Error(Error),
}

impl<E: Into<Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Error(e.into())
    }
}

/// A refusal of the rules about the appointment `row`: denials of access are audited,
/// the rest answered as they are.
fn refused(row: &AppointmentRow, refusal: Refusal) -> Failure {
    if refusal.audited() {
        let denial = Denial::told(resource::APPOINTMENT, Code::new(refusal.code()), refusal.error());
        Failure::Denied(Box::new(denial.resource(row.id).patient(row.patient_id)))
    } else {
        Failure::Error(refusal.error())
    }
}

async fn finish(state: &AppState, ctx: &RequestContext, caller: &Caller, failure: Failure) -> Response {
    match failure {
        Failure::Error(e) => reply::error(&e),
        Failure::Denied(denial) => reply::error(&denial.refuse(&state.db, ctx, caller).await),
    }
}

/// Runs a change in one transaction with its idempotency key.
async fn change<F>(
    state: &AppState,
    ctx: &RequestContext,
    caller: Caller,
    idem: Idempotency,
    work: F,
) -> Response
where
    F: FnOnce(&mut PgConnection, &AppState) -> Result<Answer, Failure> + Send + 'static,
{
    let result = state
        .with_db(move |conn, state| {
            Ok(conn.transaction::<(Answer, bool), Failure, _>(|conn| {
                match idempotency::claim(conn, &state.crypto, caller.account_id, &idem)? {
                    Claim::Replay(answer) => Ok((answer, true)),
                    Claim::Fresh(claim) => {
                        let answer = work(conn, state)?;
                        idempotency::store(conn, &state.crypto, claim, &answer)?;
                        Ok((answer, false))
                    }
                }
            }))
        })
        .await;
    match result {
        Err(e) => reply::error(&e),
        Ok(Ok((answer, replayed))) => answer.into_response(replayed),
        Ok(Err(failure)) => finish(state, ctx, &caller, failure).await,
    }
}

fn answer(status: StatusCode, view: &appointments::AppointmentView) -> Result<Answer, Failure> {
    Ok(Answer {
        status,
        body: serde_json::to_value(view).map_err(|e| Error::Internal(e.into()))?,
        etag: Some(view.version),
        location: (status == StatusCode::CREATED).then(|| format!("/v1/appointments/{}", view.id)),
    })
}

/// The answer to a change of an appointment: 200 with its new view, in its
/// provider's time zone.
fn changed(
    state: &AppState,
    row: &AppointmentRow,
    provider: &providers::Provider,
) -> Result<Answer, Failure> {
    answer(
        StatusCode::OK,
        &appointments::view(
            &state.crypto,
            row,
            provider.tz(),
            true,
            &state.settings.consult.window,
        )?,
    )
}

fn event(ctx: &RequestContext, caller: &Caller, action: Code, row: &AppointmentRow) -> audit::AuditEvent {
    audit::event(
        ctx,
        audit::actor(caller),
        action,
        resource::APPOINTMENT,
        audit::purpose_of(caller.role),
    )
    .resource(row.id)
    .patient(row.patient_id)
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BookRequest {
    provider_id: Uuid,
    type_id: Uuid,
    starts_at: DateTime<Utc>,
    /// Required for providers and admins; a patient books for themselves.
    #[serde(default)]
    patient_id: Option<Uuid>,
    /// Reason for visit (PHI: stored encrypted).
    #[serde(default)]
    reason: Option<String>,
    /// Hold the slot (pending) instead of booking it; confirm before it lapses.
    #[serde(default)]
    hold: bool,
}

/// POST /v1/appointments: hold or book a slot.
#[utoipa::path(post, path = "/v1/appointments", tag = "appointments", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first answer (kept 24 h)")), request_body = BookRequest, responses((status = 201, description = "Held (pending) or booked", body = super::appointments::AppointmentView), problems::Unauthorized, problems::Forbidden, problems::Conflict, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn create(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "appointments")
        .and(warp::post())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(idempotency::key())
        .and(body::json::<BookRequest>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_create)
        .boxed()
}

async fn on_create(
    caller: Caller,
    ctx: RequestContext,
    key: Option<String>,
    input: BookRequest,
    state: AppState,
) -> Response {
    let reason = match input.reason.as_deref().map(VisitReason::parse).transpose() {
        Ok(reason) => reason,
        Err(e) => return reply::error(&e),
    };
    let idem = Idempotency::new(
        key,
        "POST",
        "/v1/appointments",
        &serde_json::to_value(&input).unwrap_or_default(),
    );
    let hold_ttl = Duration::from_std(state.settings.scheduling.hold_ttl).unwrap_or(Duration::minutes(5));
    let request = ctx.clone();
    change(&state, &ctx, caller, idem, move |conn, state| {
        let Some((provider, kind)) = providers::with_type(conn, input.provider_id, input.type_id)? else {
            return Err(Failure::Error(match providers::get(conn, input.provider_id)? {
                None => Error::validation("provider_id", "is not a provider"),
                Some(_) => Error::validation("type_id", "is not an appointment type of this provider"),
            }));
        };
        let own_record = match caller.role {
            Role::Patient => crate::accounts::patient_id(conn, caller.account_id)?,
            Role::Provider | Role::Admin => None,
        };
        let patient_id = rules::booking_patient(&caller, provider.id, own_record, input.patient_id).map_err(
            |refusal| match refusal.audited() {
                // Whose calendar it is, not an appointment, is what was refused.
                true => Failure::Denied(Box::new(
                    Denial::told(Code::new("provider"), Code::new(refusal.code()), refusal.error())
                        .resource(provider.id),
                )),
                false => Failure::Error(refusal.error()),
            },
        )?;
        if caller.role == Role::Patient {
            let scheduling = &state.settings.scheduling;
            let upcoming = appointments::upcoming_for_update(conn, patient_id, state.clock.now())?;
            rules::within_limits(
                upcoming,
                input.hold,
                scheduling.max_holds_per_patient,
                scheduling.max_future_appointments_per_patient,
            )
            .map_err(|refusal| Failure::Error(refusal.error()))?;
        }
        let had_relationship = caller.role == Role::Provider
            && crate::records::access::relationship_for_booking(
                conn,
                caller.account_id,
                patient_id,
                state.settings.records.care_relationship_window,
                state.clock.now(),
            )?;
        let opens_record = rules::opens_record(caller.role, had_relationship);
        let row = appointments::book(
            conn,
            &state.crypto,
            &NewBooking {
                provider: &provider,
                kind: &kind,
                patient_id,
                starts_at: input.starts_at,
                reason: reason.as_ref(),
                hold: input.hold.then_some(hold_ttl),
                booked_by: caller.account_id,
                opens_record,
            },
            crate::scheduling::reminder_plan(state),
        )?;
        audit::record(
            conn,
            &event(&request, &caller, action::CREATE, &row)
                .detail(
                    Code::new("status"),
                    DetailValue::Code(Code::parse(row.status.clone()).unwrap_or(Code::new("booked"))),
                )
                .detail(Code::new("record_access"), DetailValue::Code(record_access(&row))),
        )?;
        let view = appointments::view(
            &state.crypto,
            &row,
            provider.tz(),
            true,
            &state.settings.consult.window,
        )?;
        answer(StatusCode::CREATED, &view)
    })
    .await
}

const LIST_PARAMS: &[&str] = &["provider", "patient", "status", "from", "to", "cursor", "limit"];

/// GET /v1/appointments?provider=&patient=&status=&from=&to=&cursor=&limit=: the
/// caller's appointments (all, for admins), by start time.
#[utoipa::path(get, path = "/v1/appointments", tag = "appointments", params(("provider" = Option<uuid::Uuid>, Query), ("patient" = Option<uuid::Uuid>, Query), ("status" = Option<String>, Query), ("from" = Option<String>, Query), ("to" = Option<String>, Query), ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)), responses((status = 200, description = "Appointments by start time", body = crate::http::openapi::Page<super::appointments::AppointmentView>), problems::Unauthorized, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn list(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "appointments")
        .and(warp::get())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(query::raw())
        .and(with_state(state))
        .then(on_list)
        .map(reply::respond)
        .boxed()
}

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

fn decode_cursor(value: &str) -> Option<(DateTime<Utc>, Uuid)> {
    use base64::Engine;
    let text = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value)
            .ok()?,
    )
    .ok()?;
    let (micros, id) = text.split_once(':')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

async fn on_list(
    caller: Caller,
    ctx: RequestContext,
    raw: String,
    state: AppState,
) -> Result<Response, Error> {
    let q = Query::parse(&raw, LIST_PARAMS)?;
    let mut filter = ListFilter {
        provider_id: q.uuid("provider")?,
        patient_id: q.uuid("patient")?,
        status: q.parsed(
            "status",
            "must be an appointment status such as booked",
            Status::parse,
        )?,
        from: q.datetime("from")?,
        to: q.datetime("to")?,
        after: q.parsed("cursor", "is not a cursor this API returned", decode_cursor)?,
        limit: q.number("limit", 50, 1, 200)?,
    };
    let limit = filter.limit;
    let views = state
        .with_db(move |conn, state| {
            conn.transaction(|conn| {
                match caller.role {
                    Role::Patient => {
                        let Some(own) = crate::accounts::patient_id(conn, caller.account_id)? else {
                            return Ok::<_, Error>(Vec::new());
                        };
                        if filter.patient_id.is_some_and(|p| p != own) {
                            return Ok(Vec::new());
                        }
                        filter.patient_id = Some(own);
                    }
                    Role::Provider => {
                        if filter.provider_id.is_some_and(|p| p != caller.account_id) {
                            return Ok(Vec::new());
                        }
                        filter.provider_id = Some(caller.account_id);
                    }
                    Role::Admin => {}
                }
                let rows = appointments::list(conn, &filter)?;
                let mut audit_event = audit::event(
                    &ctx,
                    audit::actor(&caller),
                    action::READ,
                    resource::APPOINTMENT,
                    audit::purpose_of(caller.role),
                )
                .detail(Code::new("results"), DetailValue::Count(rows.len() as i64));
                if let Some(p) = filter.patient_id {
                    audit_event = audit_event.patient(p);
                }
                audit::record(conn, &audit_event)?;
                // The list shows each appointment's reasons (reason for visit, why it
                // was cancelled) to the same callers the single read does, since it is
                // scoped to their own: each one opened is a read of that appointment.
                let opened: Vec<audit::AuditEvent> = rows
                    .iter()
                    .filter(|row| row.has_sealed_reason())
                    .map(|row| event(&ctx, &caller, action::READ, row))
                    .collect();
                audit::record_many(conn, &opened)?;
                let mut views = Vec::with_capacity(rows.len());
                let mut zones = std::collections::HashMap::new();
                for row in &rows {
                    let tz = match zones.get(&row.provider_id) {
                        Some(tz) => *tz,
                        None => {
                            let tz = providers::get(conn, row.provider_id)?
                                .map(|p| p.tz())
                                .unwrap_or(chrono_tz::UTC);
                            zones.insert(row.provider_id, tz);
                            tz
                        }
                    };
                    views.push(appointments::view(
                        &state.crypto,
                        row,
                        tz,
                        true,
                        &state.settings.consult.window,
                    )?);
                }
                Ok(views)
            })
        })
        .await?;
    let next_cursor = (views.len() as i64 == limit)
        .then(|| views.last().map(|v| encode_cursor(v.starts_at, v.id)))
        .flatten();
    Ok(reply::json(
        StatusCode::OK,
        &json!({ "items": views, "next_cursor": next_cursor }),
    ))
}

/// GET /v1/appointments/{id}: one appointment, with its reason for visit; audited.
#[utoipa::path(get, path = "/v1/appointments/{id}", tag = "appointments", params(("id" = uuid::Uuid, Path, description = "Appointment id")), responses((status = 200, description = "The appointment with its reason for visit", body = super::appointments::AppointmentView), problems::Unauthorized, problems::NotFound), security(("bearer" = [])))]
pub(crate) fn read(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "appointments" / Uuid)
        .and(warp::get())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(with_state(state))
        .then(on_read)
        .boxed()
}

async fn on_read(id: Uuid, caller: Caller, ctx: RequestContext, state: AppState) -> Response {
    let request = ctx.clone();
    let result = state
        .with_db(move |conn, state| {
            Ok(conn.transaction::<_, Failure, _>(|conn| {
                let row = appointments::load(conn, id)?.ok_or(Error::NotFound)?;
                if standing(conn, &caller, &row)? == Standing::Stranger {
                    return Err(refused(&row, Refusal::Hidden));
                }
                audit::record(conn, &event(&request, &caller, action::READ, &row))?;
                let tz = providers::get(conn, row.provider_id)?
                    .map(|p| p.tz())
                    .unwrap_or(chrono_tz::UTC);
                Ok(appointments::view(
                    &state.crypto,
                    &row,
                    tz,
                    true,
                    &state.settings.consult.window,
                )?)
            }))
        })
        .await;
    match result {
        Err(e) => reply::error(&e),
        Ok(Ok(view)) => etag::json(StatusCode::OK, &view),
        Ok(Err(failure)) => finish(&state, &ctx, &caller, failure).await,
    }
}

/// What every change of an existing appointment comes with: who asks, from where,
/// the version they read, and their idempotency key.
struct ChangeRequest {
    caller: Caller,
    ctx: RequestContext,
    if_match: IfMatch,
    key: Option<String>,
}

fn change_request(
    state: &AppState,
) -> impl Filter<Extract = (ChangeRequest,), Error = warp::Rejection> + Clone + use<> {
    crate::access::caller(state)
        .and(request_context())
        .and(etag::if_match())
        .and(idempotency::key())
        .map(|caller, ctx, if_match, key| ChangeRequest {
            caller,
            ctx,
            if_match,
            key,
        })
}

impl ChangeRequest {
    /// The idempotency record of this change: `POST /v1/appointments/{id}/{step}`
    /// with `body`.
    fn idempotency(&self, id: Uuid, step: &str, body: &serde_json::Value) -> Idempotency {
        Idempotency::new(
            self.key.clone(),
            "POST",
            &format!("/v1/appointments/{id}/{step}"),
            body,
        )
    }

    /// Runs `work` on the appointment, loaded and locked once the caller may see it
    /// and `If-Match` is current, in one transaction with the idempotency key.
    async fn run<F>(self, state: &AppState, idem: Idempotency, id: Uuid, work: F) -> Response
    where
        F: FnOnce(&mut PgConnection, &AppState, &Changer, AppointmentRow) -> Result<Answer, Failure>
            + Send
            + 'static,
    {
        let ChangeRequest {
            caller,
            ctx,
            if_match,
            key: _,
        } = self;
        let changer = Changer {
            caller,
            ctx: ctx.clone(),
        };
        change(state, &ctx, caller, idem, move |conn, state| {
            let row = appointments::load_for_update(conn, id)?.ok_or(Error::NotFound)?;
            if standing(conn, &changer.caller, &row)? == Standing::Stranger {
                return Err(refused(&row, Refusal::Hidden));
            }
            if_match.check(row.version)?;
            work(conn, state, &changer, row)
        })
        .await
    }
}

/// Who is changing an appointment, for the rules and the audit event.
struct Changer {
    caller: Caller,
    ctx: RequestContext,
}

/// The appointment's provider (its time zone shapes the answer) and type (its cutoff
/// is one of the rules' facts), in one query.
fn provider_and_type(
    conn: &mut PgConnection,
    row: &AppointmentRow,
) -> Result<(providers::Provider, providers::AppointmentType), Error> {
    providers::with_type(conn, row.provider_id, row.type_id)?.ok_or(Error::NotFound)
}

/// Asks the rules whether `transition` may happen to `row` now and, if so, writes it
/// with its audit event (and the cancellation's who and why, for a cancellation).
fn apply_change(
    conn: &mut PgConnection,
    state: &AppState,
    who: &Changer,
    row: &AppointmentRow,
    transition: Transition,
    cancellation: Option<Cancellation<'_>>,
) -> Result<Answer, Failure> {
    let (provider, kind) = provider_and_type(conn, row)?;
    let to = rules::transition(&facts(row, &kind), transition, who.caller.role, state.clock.now())
        .map_err(|refusal| refused(row, refusal))?;
    let updated = appointments::change_status(
        conn,
        &state.crypto,
        row,
        to,
        cancellation,
        crate::scheduling::reminder_plan(state),
    )?;
    audit::record(
        conn,
        &event(&who.ctx, &who.caller, action::UPDATE, &updated)
            .detail(
                Code::new("change"),
                DetailValue::Code(Code::new(transition.as_str())),
            )
            .detail(
                Code::new("status"),
                DetailValue::Code(Code::parse(updated.status.clone()).unwrap_or(Code::new("unknown"))),
            ),
    )?;
    changed(state, &updated, &provider)
}

/// POST /v1/appointments/{id}/confirm: a hold or a proposal becomes booked.
#[utoipa::path(post, path = "/v1/appointments/{id}/confirm", tag = "appointments", params(("id" = uuid::Uuid, Path, description = "Appointment id"), ("If-Match" = String, Header, description = "The ETag you read"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first answer (kept 24 h)")), responses((status = 200, description = "Booked", body = super::appointments::AppointmentView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict, problems::IfMatchRefused), security(("bearer" = [])))]
pub(crate) fn confirm(state: &AppState) -> BoxedFilter<(Response,)> {
    transition(state, "confirm", Transition::Confirm)
}

/// POST /v1/appointments/{id}/check-in: the patient has arrived.
#[utoipa::path(post, path = "/v1/appointments/{id}/check-in", tag = "appointments", params(("id" = uuid::Uuid, Path, description = "Appointment id"), ("If-Match" = String, Header, description = "The ETag you read"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first answer (kept 24 h)")), responses((status = 200, description = "Arrived", body = super::appointments::AppointmentView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict, problems::IfMatchRefused), security(("bearer" = [])))]
pub(crate) fn check_in(state: &AppState) -> BoxedFilter<(Response,)> {
    transition(state, "check-in", Transition::CheckIn)
}

/// POST /v1/appointments/{id}/no-show: the patient did not come (after the start).
#[utoipa::path(post, path = "/v1/appointments/{id}/no-show", tag = "appointments", params(("id" = uuid::Uuid, Path, description = "Appointment id"), ("If-Match" = String, Header, description = "The ETag you read"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first answer (kept 24 h)")), responses((status = 200, description = "Marked no-show", body = super::appointments::AppointmentView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict, problems::IfMatchRefused), security(("bearer" = [])))]
pub(crate) fn no_show(state: &AppState) -> BoxedFilter<(Response,)> {
    transition(state, "no-show", Transition::NoShow)
}

/// POST /v1/appointments/{id}/complete: the visit took place (staff).
#[utoipa::path(post, path = "/v1/appointments/{id}/complete", tag = "appointments", params(("id" = uuid::Uuid, Path, description = "Appointment id"), ("If-Match" = String, Header, description = "The ETag you read"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first answer (kept 24 h)")), responses((status = 200, description = "Fulfilled", body = super::appointments::AppointmentView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict, problems::IfMatchRefused), security(("bearer" = [])))]
pub(crate) fn complete(state: &AppState) -> BoxedFilter<(Response,)> {
    transition(state, "complete", Transition::Complete)
}

/// POST /v1/appointments/{id}/entered-in-error: undo a record made by mistake (admins).
#[utoipa::path(post, path = "/v1/appointments/{id}/entered-in-error", tag = "appointments", params(("id" = uuid::Uuid, Path, description = "Appointment id"), ("If-Match" = String, Header, description = "The ETag you read"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first answer (kept 24 h)")), responses((status = 200, description = "Marked entered in error", body = super::appointments::AppointmentView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict, problems::IfMatchRefused), security(("bearer" = [])))]
pub(crate) fn entered_in_error(state: &AppState) -> BoxedFilter<(Response,)> {
    transition(state, "entered-in-error", Transition::EnteredInError)
}

/// POST /v1/appointments/{id}/{confirm|check-in|no-show|complete|entered-in-error}:
/// status changes with no body; each needs `If-Match`.
fn transition(state: &AppState, segment: &'static str, transition: Transition) -> BoxedFilter<(Response,)> {
    warp::path("v1")
        .and(warp::path("appointments"))
        .and(warp::path::param::<Uuid>())
        .and(warp::path(segment))
        .and(warp::path::end())
        .and(warp::post())
        .and(change_request(state))
        .and(with_state(state))
        .then(move |id, request, state| on_transition(id, (segment, transition), request, state))
        .boxed()
}

async fn on_transition(
    id: Uuid,
    (segment, transition): (&'static str, Transition),
    request: ChangeRequest,
    state: AppState,
) -> Response {
    let idem = request.idempotency(id, segment, &json!({}));
    request
        .run(&state, idem, id, move |conn, state, who, row| {
            apply_change(conn, state, who, &row, transition, None)
        })
        .await
}

/// POST /v1/appointments/{id}/accept: the patient accepts a booking a provider made for
/// them without a care relationship; from then on it opens their record to that
/// provider like any other appointment. Accepting one that already does changes
/// nothing. Needs `If-Match`.
#[utoipa::path(post, path = "/v1/appointments/{id}/accept", tag = "appointments", params(("id" = uuid::Uuid, Path, description = "Appointment id"), ("If-Match" = String, Header, description = "The ETag you read"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first answer (kept 24 h)")), responses((status = 200, description = "Accepted: the appointment opens the record", body = super::appointments::AppointmentView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict, problems::IfMatchRefused), security(("bearer" = [])))]
pub(crate) fn accept(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "appointments" / Uuid / "accept")
        .and(warp::post())
        .and(change_request(state))
        .and(with_state(state))
        .then(on_accept)
        .boxed()
}

async fn on_accept(id: Uuid, request: ChangeRequest, state: AppState) -> Response {
    let idem = request.idempotency(id, "accept", &json!({}));
    request
        .run(&state, idem, id, move |conn, state, who, row| {
            let (provider, kind) = provider_and_type(conn, &row)?;
            rules::accept_booking(&facts(&row, &kind), who.caller.role)
                .map_err(|refusal| refused(&row, refusal))?;
            let updated = if row.opens_record {
                row
            } else {
                appointments::accept(conn, &row, state.clock.now())?
            };
            audit::record(
                conn,
                &event(&who.ctx, &who.caller, action::UPDATE, &updated)
                    .detail(Code::new("change"), DetailValue::Code(Code::new("accept")))
                    .detail(
                        Code::new("record_access"),
                        DetailValue::Code(record_access(&updated)),
                    ),
            )?;
            changed(state, &updated, &provider)
        })
        .await
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    /// Why (stored encrypted).
    reason: String,
}

/// POST /v1/appointments/{id}/cancel {reason}: patients within the type's cutoff;
/// providers and admins at any time. Needs `If-Match`.
#[utoipa::path(post, path = "/v1/appointments/{id}/cancel", tag = "appointments", params(("id" = uuid::Uuid, Path, description = "Appointment id"), ("If-Match" = String, Header, description = "The ETag you read"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first answer (kept 24 h)")), request_body = CancelRequest, responses((status = 200, description = "Cancelled", body = super::appointments::AppointmentView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict, problems::IfMatchRefused, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn cancel(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "appointments" / Uuid / "cancel")
        .and(warp::post())
        .and(change_request(state))
        .and(body::json::<CancelRequest>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_cancel)
        .boxed()
}

async fn on_cancel(id: Uuid, request: ChangeRequest, input: CancelRequest, state: AppState) -> Response {
    let reason = match CancellationReason::parse(&input.reason) {
        Ok(reason) => reason,
        Err(e) => return reply::error(&e),
    };
    let idem = request.idempotency(id, "cancel", &json!({ "reason": reason.as_str() }));
    request
        .run(&state, idem, id, move |conn, state, who, row| {
            let code = match who.caller.role {
                Role::Patient => "cancelled_by_patient",
                Role::Provider => "cancelled_by_provider",
                Role::Admin => "cancelled_by_admin",
            };
            let cancellation = Cancellation {
                code,
                reason: &reason,
                by: who.caller.account_id,
            };
            apply_change(conn, state, who, &row, Transition::Cancel, Some(cancellation))
        })
        .await
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RescheduleRequest {
    starts_at: DateTime<Utc>,
}

/// POST /v1/appointments/{id}/reschedule {starts_at}: moves it atomically (the new time
/// is taken and the old freed together, or nothing changes). Needs `If-Match`.
#[utoipa::path(post, path = "/v1/appointments/{id}/reschedule", tag = "appointments", params(("id" = uuid::Uuid, Path, description = "Appointment id"), ("If-Match" = String, Header, description = "The ETag you read"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first answer (kept 24 h)")), request_body = RescheduleRequest, responses((status = 200, description = "Moved", body = super::appointments::AppointmentView), problems::Unauthorized, problems::Forbidden, problems::NotFound, problems::Conflict, problems::IfMatchRefused, problems::Invalid), security(("bearer" = [])))]
pub(crate) fn reschedule(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "appointments" / Uuid / "reschedule")
        .and(warp::post())
        .and(change_request(state))
        .and(body::json::<RescheduleRequest>(state.settings.http.body_limit))
        .and(with_state(state))
        .then(on_reschedule)
        .boxed()
}

async fn on_reschedule(
    id: Uuid,
    request: ChangeRequest,
    input: RescheduleRequest,
    state: AppState,
) -> Response {
    let idem = request.idempotency(
        id,
        "reschedule",
        &serde_json::to_value(&input).unwrap_or_default(),
    );
    request
        .run(&state, idem, id, move |conn, state, who, row| {
            let (provider, kind) = provider_and_type(conn, &row)?;
            rules::reschedule(&facts(&row, &kind), who.caller.role, state.clock.now())
                .map_err(|refusal| refused(&row, refusal))?;
            let updated = appointments::reschedule(
                conn,
                &row,
                &provider,
                &kind,
                input.starts_at,
                crate::scheduling::reminder_plan(state),
            )?;
            audit::record(
                conn,
                &event(&who.ctx, &who.caller, action::UPDATE, &updated)
                    .detail(Code::new("change"), DetailValue::Code(Code::new("reschedule"))),
            )?;
            changed(state, &updated, &provider)
        })
        .await
}
