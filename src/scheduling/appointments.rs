//! Appointments: holding, booking, rescheduling and every status change.
//!
//! The rules that need the clock or the calendar are checked here (the slot is offered,
//! the patient's cancellation cutoff, a hold not yet lapsed); the rule that matters
//! most, no double booking, is the database's: its exclusion constraints refuse any
//! overlap whatever path writes, and a refused insert becomes a 409.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use serde::Serialize;
use uuid::Uuid;

use super::availability;
use super::providers::{AppointmentType, Provider};
use super::reasons::{CancellationReason, VisitReason};
use super::slots::{self, Busy, Input, TypeRules};
use super::status::Status;
use crate::crypto::{Crypto, CryptoError, FieldContext};
use crate::error::Error;
use crate::outbox;
use crate::reminders::schedule::{self as reminders, Plan};
use crate::schema::{appointments, patients};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = appointments)]
pub struct AppointmentRow {
    pub id: Uuid,
    pub provider_id: Uuid,
    pub patient_id: Uuid,
    pub type_id: Uuid,
    pub status: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub buffer_before_minutes: i32,
    pub buffer_after_minutes: i32,
    pub modality: String,
    pub hold_expires_at: Option<DateTime<Utc>>,
    reason_enc: Option<Vec<u8>>,
    pub cancellation_code: Option<String>,
    cancellation_reason_enc: Option<Vec<u8>>,
    pub cancelled_by: Option<Uuid>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub booked_by: Uuid,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Whether it gives its provider a care relationship with the patient (see
    /// [`super::rules::opens_record`]).
    pub opens_record: bool,
    /// When the patient accepted a booking that did not open their record.
    pub record_accepted_at: Option<DateTime<Utc>>,
}

impl AppointmentRow {
    pub fn status(&self) -> Status {
        Status::parse(&self.status).unwrap_or(Status::EnteredInError)
    }

    /// What an event about this appointment says of it.
    pub fn facts(&self) -> outbox::AppointmentFacts<'_> {
        outbox::AppointmentFacts {
            id: self.id,
            provider_id: self.provider_id,
            patient_id: self.patient_id,
            type_id: self.type_id,
            status: &self.status,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            version: self.version,
        }
    }

    /// What its reminders depend on.
    pub fn reminded(&self) -> reminders::Reminded {
        reminders::Reminded {
            appointment_id: self.id,
            version: self.version,
            starts_at: self.starts_at,
            booked: self.status() == Status::Booked,
        }
    }
}

fn reason_field(id: Uuid) -> FieldContext {
    crate::crypto::field("appointments", "reason", id)
}

fn cancellation_field(id: Uuid) -> FieldContext {
    crate::crypto::field("appointments", "cancellation_reason", id)
}

/// A booking refused by the database's constraints, or by the calendar.
fn conflict(err: DieselError) -> Error {
    if let DieselError::DatabaseError(_, info) = &err {
        match info.constraint_name() {
            Some("appointments_no_double_booking") => {
                return Error::conflict("slot_taken", "that time is no longer free");
            }
            Some("appointments_no_patient_overlap") => {
                return Error::conflict(
                    "patient_busy",
                    "the patient already has an appointment at that time",
                );
            }
            // Checked by the foreign key rather than a lookup before the insert.
            Some("appointments_patient_id_fkey") => {
                return Error::validation("patient_id", "is not a patient");
            }
            _ => {}
        }
    }
    err.into()
}

/// The longest appointment and buffer the schema allows (the CHECKs on
/// appointment_types).
const MAX_DURATION_MINUTES: i32 = 480;
const MAX_BUFFER_MINUTES: i32 = 240;

/// Time taken on the provider's calendar in [from, to), leaving out `except`.
pub fn busy(
    conn: &mut PgConnection,
    provider_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    except: Option<Uuid>,
) -> QueryResult<Vec<Busy>> {
    // Bounds on starts_at that every overlapping appointment meets, so that the
    // (provider_id, starts_at) index narrows the scan to the range instead of the
    // provider's whole history.
    let earliest_start = from - Duration::minutes(i64::from(MAX_DURATION_MINUTES + MAX_BUFFER_MINUTES));
    let latest_start = to + Duration::minutes(i64::from(MAX_BUFFER_MINUTES));
    let mut query = appointments::table
        .filter(appointments::provider_id.eq(provider_id))
        .filter(appointments::starts_at.gt(earliest_start))
        .filter(appointments::starts_at.lt(latest_start))
        .filter(appointments::occupied_to.gt(from))
        .filter(appointments::occupied_from.lt(to))
        .filter(
            appointments::status
                .eq_any(["booked", "arrived"])
                .or(appointments::status
                    .eq("pending")
                    .and(appointments::hold_expires_at.gt(diesel::dsl::now))),
        )
        .select((appointments::occupied_from, appointments::occupied_to))
        .into_boxed();
    if let Some(id) = except {
        query = query.filter(appointments::id.ne(id));
    }
    Ok(query
        .load::<(DateTime<Utc>, DateTime<Utc>)>(conn)?
        .into_iter()
        .map(|(from, to)| Busy { from, to })
        .collect())
}

/// Live bookings of a type per local date, for its daily limit.
pub fn booked_per_day(
    conn: &mut PgConnection,
    provider: &Provider,
    type_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    except: Option<Uuid>,
) -> QueryResult<HashMap<NaiveDate, u32>> {
    let tz = provider.tz();
    let mut query = appointments::table
        .filter(appointments::provider_id.eq(provider.id))
        .filter(appointments::type_id.eq(type_id))
        .filter(appointments::starts_at.ge(from - Duration::days(2)))
        .filter(appointments::starts_at.lt(to + Duration::days(2)))
        .filter(
            appointments::status
                .eq_any(["booked", "arrived", "fulfilled"])
                .or(appointments::status
                    .eq("pending")
                    .and(appointments::hold_expires_at.gt(diesel::dsl::now))),
        )
        .select(appointments::starts_at)
        .into_boxed();
    if let Some(id) = except {
        query = query.filter(appointments::id.ne(id));
    }
    let mut counts = HashMap::new();
    for start in query.load::<DateTime<Utc>>(conn)? {
        *counts.entry(start.with_timezone(&tz).date_naive()).or_insert(0) += 1;
    }
    Ok(counts)
}

pub fn type_rules(t: &AppointmentType) -> TypeRules {
    TypeRules {
        duration: Duration::minutes(i64::from(t.duration_minutes)),
        buffer_before: Duration::minutes(i64::from(t.buffer_before_minutes)),
        buffer_after: Duration::minutes(i64::from(t.buffer_after_minutes)),
        min_notice: Duration::minutes(i64::from(t.min_notice_minutes)),
        horizon: Duration::days(i64::from(t.booking_horizon_days)),
        max_per_day: t.max_per_day.and_then(|m| u32::try_from(m).ok()),
    }
}

/// Free slots of `kind` starting in [from, to).
pub fn free_slots(
    conn: &mut PgConnection,
    provider: &Provider,
    kind: &AppointmentType,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    except: Option<Uuid>,
) -> QueryResult<Vec<slots::Slot>> {
    let tz = provider.tz();
    let rules = type_rules(kind);
    let weekly = availability::weekly(conn, provider.id)?;
    let local_from = (from - Duration::days(2)).with_timezone(&tz).naive_local();
    let local_to = (to + Duration::days(2)).with_timezone(&tz).naive_local();
    let overrides: Vec<_> = availability::overrides(conn, provider.id, Some((local_from, local_to)))?
        .iter()
        .map(availability::to_override)
        .collect();
    let margin = Duration::minutes(i64::from(kind.duration_minutes + 2 * MAX_BUFFER_MINUTES));
    let busy = busy(conn, provider.id, from - margin, to + margin, except)?;
    let per_day = match kind.max_per_day {
        Some(_) => booked_per_day(conn, provider, kind.id, from, to, except)?,
        None => HashMap::new(),
    };
    Ok(slots::compute(&Input {
        time_zone: tz,
        weekly: &weekly,
        overrides: &overrides,
        rules,
        busy: &busy,
        booked_per_day: &per_day,
        from,
        to,
        now,
    }))
}

/// Whether `starts_at` is a slot the provider offers now for `kind`, other bookings
/// aside: 422 when it never was one, 409 when the type's daily limit is reached.
///
/// Overlap with other appointments is not looked up here: the exclusion constraints
/// decide it at insert time, for every writer at once (see [`conflict`]). Slots are
/// laid out from each window's start whatever is booked, so "offered if nothing were
/// booked" plus "overlaps nothing live" is exactly "offered now".
fn check_slot(
    conn: &mut PgConnection,
    provider: &Provider,
    kind: &AppointmentType,
    starts_at: DateTime<Utc>,
    now: DateTime<Utc>,
    except: Option<Uuid>,
) -> Result<(), Error> {
    let tz = provider.tz();
    let weekly = availability::weekly(conn, provider.id)?;
    let local_from = (starts_at - Duration::days(2)).with_timezone(&tz).naive_local();
    let local_to = (starts_at + Duration::days(2)).with_timezone(&tz).naive_local();
    let overrides: Vec<_> = availability::overrides(conn, provider.id, Some((local_from, local_to)))?
        .iter()
        .map(availability::to_override)
        .collect();
    let mut rules = type_rules(kind);
    let daily_limit = rules.max_per_day.take();
    let window_end = starts_at + Duration::seconds(1);
    let offered = slots::compute(&Input {
        time_zone: tz,
        weekly: &weekly,
        overrides: &overrides,
        rules,
        busy: &[],
        booked_per_day: &HashMap::new(),
        from: starts_at,
        to: window_end,
        now,
    });
    if !offered.iter().any(|s| s.starts_at == starts_at) {
        return Err(Error::validation(
            "starts_at",
            "is not a slot this provider offers for this appointment type (see GET /v1/providers/{id}/slots)",
        ));
    }
    if let Some(max) = daily_limit {
        // Two bookings racing for a day's last place: one at a time per provider,
        // type and local day, so the count below cannot go stale before the insert.
        let day = starts_at.with_timezone(&tz).date_naive();
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind::<diesel::sql_types::Text, _>(format!("{}:{}:{day}", provider.id, kind.id))
            .execute(conn)?;
        let booked = booked_per_day(conn, provider, kind.id, starts_at, window_end, except)?;
        if booked.get(&day).copied().unwrap_or(0) >= max {
            return Err(Error::conflict(
                "slot_taken",
                "that day is fully booked for this appointment type",
            ));
        }
    }
    Ok(())
}

/// A new booking.
#[derive(Debug)]
pub struct NewBooking<'a> {
    pub provider: &'a Provider,
    pub kind: &'a AppointmentType,
    pub patient_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub reason: Option<&'a VisitReason>,
    /// `Some(ttl)`: a hold (pending) lapsing after `ttl`; `None`: booked at once.
    pub hold: Option<Duration>,
    pub booked_by: Uuid,
    /// Whether the booking gives the provider access to the patient's record.
    pub opens_record: bool,
}

/// Holds or books a slot, with its outbox event.
pub fn book(
    conn: &mut PgConnection,
    crypto: &Crypto,
    booking: &NewBooking<'_>,
    plan: Plan<'_>,
) -> Result<AppointmentRow, Error> {
    if !booking.kind.active {
        return Err(Error::validation(
            "type_id",
            "this appointment type is not offered any more",
        ));
    }
    let now = plan.now;
    check_slot(conn, booking.provider, booking.kind, booking.starts_at, now, None)?;
    let id = Uuid::now_v7();
    let status = if booking.hold.is_some() {
        Status::Pending
    } else {
        Status::Booked
    };
    let reason = booking
        .reason
        .map(|r| crypto.encrypt_str(&reason_field(id), r.as_str()))
        .transpose()?;
    let row = diesel::insert_into(appointments::table)
        .values((
            appointments::id.eq(id),
            appointments::provider_id.eq(booking.provider.id),
            appointments::patient_id.eq(booking.patient_id),
            appointments::type_id.eq(booking.kind.id),
            appointments::status.eq(status.as_str()),
            appointments::starts_at.eq(booking.starts_at),
            appointments::ends_at
                .eq(booking.starts_at + Duration::minutes(i64::from(booking.kind.duration_minutes))),
            appointments::buffer_before_minutes.eq(booking.kind.buffer_before_minutes),
            appointments::buffer_after_minutes.eq(booking.kind.buffer_after_minutes),
            // Kept by the trigger; any value is overwritten.
            appointments::occupied_from.eq(booking.starts_at),
            appointments::occupied_to.eq(booking.starts_at),
            appointments::modality.eq(&booking.kind.modality),
            appointments::hold_expires_at.eq(booking.hold.map(|ttl| now + ttl)),
            appointments::reason_enc.eq(reason),
            appointments::booked_by.eq(booking.booked_by),
            appointments::opens_record.eq(booking.opens_record),
        ))
        .returning(AppointmentRow::as_returning())
        .get_result(conn)
        .map_err(conflict)?;
    let kind = if booking.hold.is_some() {
        outbox::kind::SLOT_HELD
    } else {
        outbox::kind::APPOINTMENT_BOOKED
    };
    outbox::emit(conn, kind, row.facts(), serde_json::json!({}))?;
    reminders::sync(
        conn,
        row.reminded(),
        booking.kind.reminder_offsets().as_deref(),
        plan,
    )?;
    Ok(row)
}

/// The patient's live holds and future appointments at `now`, with the patient
/// locked until the transaction ends, so that concurrent bookings for one patient
/// count one after another and a limit is never exceeded.
pub fn upcoming_for_update(
    conn: &mut PgConnection,
    patient_id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<super::rules::Upcoming> {
    // NO KEY UPDATE: other transactions' foreign-key checks (KEY SHARE) still pass.
    patients::table
        .find(patient_id)
        .select(patients::id)
        .for_no_key_update()
        .first::<Uuid>(conn)
        .optional()?;
    // One read for both counts: this is on every booking a patient makes.
    #[derive(QueryableByName)]
    struct Counts {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        holds: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        appointments: i64,
    }
    let counts = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE status = 'pending' AND hold_expires_at > $2) AS holds, \
                count(*) FILTER (WHERE status = 'booked' OR (status = 'pending' AND hold_expires_at > $2)) \
                    AS appointments \
         FROM appointments WHERE patient_id = $1 AND starts_at > $2",
    )
    .bind::<diesel::sql_types::Uuid, _>(patient_id)
    .bind::<diesel::sql_types::Timestamptz, _>(now)
    .get_result::<Counts>(conn)?;
    Ok(super::rules::Upcoming {
        holds: counts.holds,
        appointments: counts.appointments,
    })
}

/// The appointment, locked for a change.
pub fn load_for_update(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<AppointmentRow>> {
    appointments::table
        .find(id)
        .select(AppointmentRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

pub fn load(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<AppointmentRow>> {
    appointments::table
        .find(id)
        .select(AppointmentRow::as_select())
        .first(conn)
        .optional()
}

/// The account of the appointment's patient, if they have one.
pub fn patient_account(conn: &mut PgConnection, patient_id: Uuid) -> QueryResult<Option<Uuid>> {
    Ok(patients::table
        .find(patient_id)
        .select(patients::account_id)
        .first::<Option<Uuid>>(conn)
        .optional()?
        .flatten())
}

/// Moves an appointment to a new time in one statement: the new time is taken and the
/// old one freed together, or nothing changes.
pub fn reschedule(
    conn: &mut PgConnection,
    row: &AppointmentRow,
    provider: &Provider,
    kind: &AppointmentType,
    starts_at: DateTime<Utc>,
    plan: Plan<'_>,
) -> Result<AppointmentRow, Error> {
    check_slot(conn, provider, kind, starts_at, plan.now, Some(row.id))?;
    let updated = diesel::update(appointments::table.find(row.id))
        .set((
            appointments::starts_at.eq(starts_at),
            appointments::ends_at.eq(starts_at + (row.ends_at - row.starts_at)),
            appointments::version.eq(appointments::version + 1),
            appointments::updated_at.eq(diesel::dsl::now),
        ))
        .returning(AppointmentRow::as_returning())
        .get_result(conn)
        .map_err(conflict)?;
    outbox::emit(
        conn,
        outbox::kind::APPOINTMENT_RESCHEDULED,
        updated.facts(),
        serde_json::json!({ "previous_starts_at": row.starts_at, "previous_ends_at": row.ends_at }),
    )?;
    outbox::emit(
        conn,
        outbox::kind::SLOT_RELEASED,
        row.facts(),
        serde_json::json!({ "cause": "rescheduled", "version": updated.version }),
    )?;
    reminders::sync(conn, updated.reminded(), kind.reminder_offsets().as_deref(), plan)?;
    Ok(updated)
}

/// A cancellation's who and why.
#[derive(Debug)]
pub struct Cancellation<'a> {
    pub code: &'static str,
    pub reason: &'a CancellationReason,
    pub by: Uuid,
}

/// Applies a status change decided by the state machine, with its outbox events.
pub fn change_status(
    conn: &mut PgConnection,
    crypto: &Crypto,
    row: &AppointmentRow,
    to: Status,
    cancellation: Option<Cancellation<'_>>,
    plan: Plan<'_>,
) -> Result<AppointmentRow, Error> {
    let (code, reason, by, at) = match &cancellation {
        Some(c) => (
            Some(c.code),
            Some(crypto.encrypt_str(&cancellation_field(row.id), c.reason.as_str())?),
            Some(c.by),
            Some(plan.now),
        ),
        None => (None, None, None, None),
    };
    let updated = diesel::update(appointments::table.find(row.id))
        .set((
            appointments::status.eq(to.as_str()),
            appointments::hold_expires_at.eq(if to == Status::Pending {
                row.hold_expires_at
            } else {
                None
            }),
            appointments::cancellation_code.eq(code.or(row.cancellation_code.as_deref())),
            appointments::cancellation_reason_enc.eq(reason.or_else(|| row.cancellation_reason_enc.clone())),
            appointments::cancelled_by.eq(by.or(row.cancelled_by)),
            appointments::cancelled_at.eq(at.or(row.cancelled_at)),
            appointments::version.eq(appointments::version + 1),
            appointments::updated_at.eq(diesel::dsl::now),
        ))
        .returning(AppointmentRow::as_returning())
        .get_result(conn)
        .map_err(conflict)?;
    let from = row.status();
    let extra = serde_json::json!({ "previous_status": from.as_str() });
    match to {
        Status::Booked => {
            outbox::emit(conn, outbox::kind::APPOINTMENT_BOOKED, updated.facts(), extra)?;
        }
        Status::Cancelled => {
            outbox::emit(conn, outbox::kind::APPOINTMENT_CANCELLED, updated.facts(), extra)?;
        }
        _ => {
            outbox::emit(
                conn,
                outbox::kind::APPOINTMENT_STATUS_CHANGED,
                updated.facts(),
                extra,
            )?;
        }
    }
    if from.occupies_time() && !to.occupies_time() {
        outbox::emit(
            conn,
            outbox::kind::SLOT_RELEASED,
            updated.facts(),
            serde_json::json!({ "cause": to.as_str() }),
        )?;
    }
    // Booked now: reminders at the type's offsets; anything else: none left.
    let type_offsets = match to {
        Status::Booked => crate::scheduling::providers::get_type(conn, updated.provider_id, updated.type_id)?
            .and_then(|t| t.reminder_offsets()),
        _ => None,
    };
    reminders::sync(conn, updated.reminded(), type_offsets.as_deref(), plan)?;
    Ok(updated)
}

/// The patient accepts a booking that did not open their record: now it does (a new
/// version, with its outbox event).
pub fn accept(
    conn: &mut PgConnection,
    row: &AppointmentRow,
    now: DateTime<Utc>,
) -> Result<AppointmentRow, Error> {
    let updated = diesel::update(appointments::table.find(row.id))
        .set((
            appointments::opens_record.eq(true),
            appointments::record_accepted_at.eq(now),
            appointments::version.eq(appointments::version + 1),
            appointments::updated_at.eq(diesel::dsl::now),
        ))
        .returning(AppointmentRow::as_returning())
        .get_result(conn)?;
    outbox::emit(
        conn,
        outbox::kind::APPOINTMENT_ACCEPTED,
        updated.facts(),
        serde_json::json!({}),
    )?;
    Ok(updated)
}

/// What the API shows of an appointment.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AppointmentView {
    pub id: Uuid,
    pub provider_id: Uuid,
    pub patient_id: Uuid,
    pub type_id: Uuid,
    pub status: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// The start in the provider's time zone.
    pub local_start: String,
    pub modality: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<CancellationView>,
    /// For a video appointment: when its consultation room is open
    /// (`CAREWIRE_CONSULT_OPENS_BEFORE_MINUTES` before the start to
    /// `CAREWIRE_CONSULT_CLOSES_AFTER_MINUTES` after the end). Joining outside it is
    /// refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consultation: Option<RoomHours>,
    /// Whether this appointment gives its provider access to the patient's record
    /// (notes, full profile). False for a booking a provider made for a patient they
    /// had no care relationship with, until the patient accepts it
    /// (`POST /v1/appointments/{id}/accept`).
    pub opens_record: bool,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl crate::http::etag::Versioned for AppointmentView {
    fn version(&self) -> i32 {
        self.version
    }
}

/// When a consultation room is open.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct RoomHours {
    pub opens_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
}

impl std::fmt::Debug for AppointmentView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppointmentView")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CancellationView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancellationView")
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CancellationView {
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

impl AppointmentRow {
    /// Whether the row holds a sealed reason (for visit, or for its cancellation):
    /// showing it is a read of patient data.
    pub fn has_sealed_reason(&self) -> bool {
        self.reason_enc.is_some() || self.cancellation_reason_enc.is_some()
    }
}

/// The view; with `detail`, the sealed reason fields are opened. `room` is when
/// consultation rooms open and close around their appointments.
pub fn view(
    crypto: &Crypto,
    row: &AppointmentRow,
    tz: chrono_tz::Tz,
    detail: bool,
    room: &crate::config::Window,
) -> Result<AppointmentView, CryptoError> {
    let open = |sealed: &Option<Vec<u8>>, ctx: FieldContext| -> Result<Option<String>, CryptoError> {
        match sealed {
            Some(s) if detail => crypto.decrypt_string(&ctx, s).map(|v| Some(v.to_string())),
            _ => Ok(None),
        }
    };
    Ok(AppointmentView {
        id: row.id,
        provider_id: row.provider_id,
        patient_id: row.patient_id,
        type_id: row.type_id,
        status: row.status.clone(),
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        local_start: row.starts_at.with_timezone(&tz).to_rfc3339(),
        modality: row.modality.clone(),
        hold_expires_at: row.hold_expires_at,
        reason: open(&row.reason_enc, reason_field(row.id))?,
        cancellation: match &row.cancellation_code {
            Some(code) => Some(CancellationView {
                code: code.clone(),
                reason: open(&row.cancellation_reason_enc, cancellation_field(row.id))?,
                by: row.cancelled_by,
                at: row.cancelled_at,
            }),
            None => None,
        },
        consultation: (row.modality == "video").then(|| {
            let (opens_at, closes_at) = room.around(row.starts_at, row.ends_at);
            RoomHours { opens_at, closes_at }
        }),
        opens_record: row.opens_record,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// What a listing may filter on.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub provider_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub status: Option<Status>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only after this (starts_at, id): the previous page's cursor.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

pub fn list(conn: &mut PgConnection, filter: &ListFilter) -> QueryResult<Vec<AppointmentRow>> {
    let mut query = appointments::table
        .select(AppointmentRow::as_select())
        .into_boxed();
    if let Some(p) = filter.provider_id {
        query = query.filter(appointments::provider_id.eq(p));
    }
    if let Some(p) = filter.patient_id {
        query = query.filter(appointments::patient_id.eq(p));
    }
    if let Some(s) = filter.status {
        query = query.filter(appointments::status.eq(s.as_str()));
    }
    if let Some(from) = filter.from {
        query = query.filter(appointments::starts_at.ge(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(appointments::starts_at.lt(to));
    }
    if let Some((at, id)) = filter.after {
        query = query.filter(
            appointments::starts_at
                .gt(at)
                .or(appointments::starts_at.eq(at).and(appointments::id.gt(id))),
        );
    }
    query
        .order((appointments::starts_at.asc(), appointments::id.asc()))
        .limit(filter.limit)
        .load(conn)
}
