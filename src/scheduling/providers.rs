//! Providers' public profiles and their appointment types. Nothing here is PHI.

use crate::text::{self, Rules};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;
use crate::schema::{accounts, appointment_types, providers};

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = providers)]
pub struct Provider {
    pub id: Uuid,
    pub display_name: String,
    pub specialty: Option<String>,
    pub time_zone: String,
    pub bio: Option<String>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl crate::http::etag::Versioned for Provider {
    fn version(&self) -> i32 {
        self.version
    }
}

impl Provider {
    pub fn tz(&self) -> Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }
}

/// The editable part of a profile.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileInput {
    pub display_name: String,
    #[serde(default)]
    pub specialty: Option<String>,
    /// IANA time zone, such as `America/New_York`.
    pub time_zone: String,
    #[serde(default)]
    pub bio: Option<String>,
}

pub fn parse_time_zone(name: &str) -> Result<Tz, Error> {
    name.parse::<Tz>()
        .map_err(|_| Error::validation("time_zone", "must be an IANA time zone such as America/New_York"))
}

impl ProfileInput {
    pub fn validated(self) -> Result<ProfileInput, Error> {
        parse_time_zone(&self.time_zone)?;
        Ok(ProfileInput {
            display_name: text::parse("display_name", &self.display_name, Rules::line(100))?,
            specialty: self
                .specialty
                .map(|s| text::parse("specialty", &s, Rules::line(100)))
                .transpose()?,
            bio: self
                .bio
                .map(|b| text::parse("bio", &b, Rules::prose(2000)))
                .transpose()?,
            ..self
        })
    }
}

/// Creates the profile of a provider account (409 if it has one; 422 if the account
/// is not a provider's).
pub fn create(conn: &mut PgConnection, account_id: Uuid, input: &ProfileInput) -> Result<Provider, Error> {
    let role: Option<String> = accounts::table
        .find(account_id)
        .select(accounts::role)
        .first(conn)
        .optional()?;
    if role.as_deref() != Some("provider") {
        return Err(Error::validation(
            "account_id",
            "must be the id of a provider account",
        ));
    }
    let inserted = diesel::insert_into(providers::table)
        .values((
            providers::id.eq(account_id),
            providers::display_name.eq(input.display_name.trim()),
            providers::specialty.eq(&input.specialty),
            providers::time_zone.eq(&input.time_zone),
            providers::bio.eq(&input.bio),
        ))
        .returning(Provider::as_returning())
        .get_result(conn);
    let provider = match inserted {
        Ok(p) => p,
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {
            return Err(Error::conflict(
                "provider_exists",
                "this account already has a provider profile",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    crate::accounts::set_display_name(conn, account_id, Some(&provider.display_name))?;
    Ok(provider)
}

pub fn get(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<Provider>> {
    providers::table
        .find(id)
        .select(Provider::as_select())
        .first(conn)
        .optional()
}

pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<Provider>> {
    providers::table
        .select(Provider::as_select())
        .order(providers::display_name.asc())
        .load(conn)
}

/// Replaces the profile if it is still at `expected_version`.
pub fn update(
    conn: &mut PgConnection,
    id: Uuid,
    expected_version: i32,
    input: &ProfileInput,
) -> Result<Provider, Error> {
    let provider = diesel::update(
        providers::table
            .find(id)
            .filter(providers::version.eq(expected_version)),
    )
    .set((
        providers::display_name.eq(input.display_name.trim()),
        providers::specialty.eq(&input.specialty),
        providers::time_zone.eq(&input.time_zone),
        providers::bio.eq(&input.bio),
        providers::version.eq(providers::version + 1),
        providers::updated_at.eq(diesel::dsl::now),
    ))
    .returning(Provider::as_returning())
    .get_result(conn)
    .optional()?
    .ok_or(Error::PreconditionFailed)?;
    crate::accounts::set_display_name(conn, id, Some(&provider.display_name))?;
    Ok(provider)
}

/// An appointment type.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = appointment_types)]
pub struct AppointmentType {
    pub id: Uuid,
    pub provider_id: Uuid,
    pub name: String,
    pub duration_minutes: i32,
    pub buffer_before_minutes: i32,
    pub buffer_after_minutes: i32,
    pub modality: String,
    pub min_notice_minutes: i32,
    pub booking_horizon_days: i32,
    pub max_per_day: Option<i32>,
    pub cancellation_cutoff_minutes: i32,
    pub active: bool,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Reminders, in minutes before the start; `null`: the server's default
    /// (`CAREWIRE_REMINDER_OFFSETS`).
    #[schema(value_type = Option<Vec<i32>>)]
    #[serde(serialize_with = "offsets_as_list")]
    pub reminder_offsets_minutes: Option<Vec<Option<i32>>>,
}

impl crate::http::etag::Versioned for AppointmentType {
    fn version(&self) -> i32 {
        self.version
    }
}

fn offsets_as_list<S: serde::Serializer>(
    offsets: &Option<Vec<Option<i32>>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match offsets {
        Some(list) => s.collect_seq(list.iter().flatten()),
        None => s.serialize_none(),
    }
}

impl AppointmentType {
    /// The type's own reminder offsets, if it overrides the default.
    pub fn reminder_offsets(&self) -> Option<Vec<i32>> {
        self.reminder_offsets_minutes
            .as_ref()
            .map(|list| list.iter().flatten().copied().collect())
    }
}

/// What defines an appointment type.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TypeInput {
    pub name: String,
    pub duration_minutes: i32,
    #[serde(default)]
    pub buffer_before_minutes: i32,
    #[serde(default)]
    pub buffer_after_minutes: i32,
    /// `video` or `in_person`.
    pub modality: String,
    #[serde(default)]
    pub min_notice_minutes: i32,
    #[serde(default = "default_horizon")]
    pub booking_horizon_days: i32,
    #[serde(default)]
    pub max_per_day: Option<i32>,
    #[serde(default)]
    pub cancellation_cutoff_minutes: i32,
    #[serde(default = "default_active")]
    pub active: bool,
    /// Reminders, in minutes before the start (up to 5, 1 to 43200 each); omitted
    /// or `null`: the server's default.
    #[serde(default)]
    pub reminder_offsets_minutes: Option<Vec<i32>>,
}

fn default_horizon() -> i32 {
    60
}

fn default_active() -> bool {
    true
}

fn within(field: &'static str, value: i32, min: i32, max: i32) -> Result<(), Error> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::validation(field, format!("must be from {min} to {max}")))
    }
}

impl TypeInput {
    pub fn validated(mut self) -> Result<TypeInput, Error> {
        self.name = text::parse("name", &self.name, Rules::line(100))?;
        within("duration_minutes", self.duration_minutes, 5, 480)?;
        within("buffer_before_minutes", self.buffer_before_minutes, 0, 240)?;
        within("buffer_after_minutes", self.buffer_after_minutes, 0, 240)?;
        within("min_notice_minutes", self.min_notice_minutes, 0, 43_200)?;
        within("booking_horizon_days", self.booking_horizon_days, 1, 730)?;
        within(
            "cancellation_cutoff_minutes",
            self.cancellation_cutoff_minutes,
            0,
            43_200,
        )?;
        if let Some(max) = self.max_per_day {
            within("max_per_day", max, 1, 1000)?;
        }
        if !matches!(self.modality.as_str(), "video" | "in_person") {
            return Err(Error::validation("modality", "must be video or in_person"));
        }
        if let Some(offsets) = &mut self.reminder_offsets_minutes {
            if offsets.len() > 5 || offsets.iter().any(|m| !(1..=43_200).contains(m)) {
                return Err(Error::validation(
                    "reminder_offsets_minutes",
                    "at most 5 offsets, each from 1 to 43200 minutes",
                ));
            }
            offsets.sort_unstable_by(|a, b| b.cmp(a));
            offsets.dedup();
        }
        Ok(self)
    }
}

fn offsets_column(input: &TypeInput) -> Option<Vec<Option<i32>>> {
    input
        .reminder_offsets_minutes
        .as_ref()
        .map(|list| list.iter().copied().map(Some).collect())
}

pub fn create_type(
    conn: &mut PgConnection,
    provider_id: Uuid,
    input: &TypeInput,
) -> QueryResult<AppointmentType> {
    diesel::insert_into(appointment_types::table)
        .values((
            appointment_types::id.eq(Uuid::now_v7()),
            appointment_types::provider_id.eq(provider_id),
            appointment_types::name.eq(input.name.trim()),
            appointment_types::duration_minutes.eq(input.duration_minutes),
            appointment_types::buffer_before_minutes.eq(input.buffer_before_minutes),
            appointment_types::buffer_after_minutes.eq(input.buffer_after_minutes),
            appointment_types::modality.eq(&input.modality),
            appointment_types::min_notice_minutes.eq(input.min_notice_minutes),
            appointment_types::booking_horizon_days.eq(input.booking_horizon_days),
            appointment_types::max_per_day.eq(input.max_per_day),
            appointment_types::cancellation_cutoff_minutes.eq(input.cancellation_cutoff_minutes),
            appointment_types::active.eq(input.active),
            appointment_types::reminder_offsets_minutes.eq(offsets_column(input)),
        ))
        .returning(AppointmentType::as_returning())
        .get_result(conn)
}

pub fn update_type(
    conn: &mut PgConnection,
    provider_id: Uuid,
    type_id: Uuid,
    expected_version: i32,
    input: &TypeInput,
) -> Result<AppointmentType, Error> {
    diesel::update(
        appointment_types::table
            .find(type_id)
            .filter(appointment_types::provider_id.eq(provider_id))
            .filter(appointment_types::version.eq(expected_version)),
    )
    .set((
        appointment_types::name.eq(input.name.trim()),
        appointment_types::duration_minutes.eq(input.duration_minutes),
        appointment_types::buffer_before_minutes.eq(input.buffer_before_minutes),
        appointment_types::buffer_after_minutes.eq(input.buffer_after_minutes),
        appointment_types::modality.eq(&input.modality),
        appointment_types::min_notice_minutes.eq(input.min_notice_minutes),
        appointment_types::booking_horizon_days.eq(input.booking_horizon_days),
        appointment_types::max_per_day.eq(input.max_per_day),
        appointment_types::cancellation_cutoff_minutes.eq(input.cancellation_cutoff_minutes),
        appointment_types::active.eq(input.active),
        appointment_types::reminder_offsets_minutes.eq(offsets_column(input)),
        appointment_types::version.eq(appointment_types::version + 1),
        appointment_types::updated_at.eq(diesel::dsl::now),
    ))
    .returning(AppointmentType::as_returning())
    .get_result(conn)
    .optional()?
    .ok_or(Error::PreconditionFailed)
}

pub fn get_type(
    conn: &mut PgConnection,
    provider_id: Uuid,
    type_id: Uuid,
) -> QueryResult<Option<AppointmentType>> {
    appointment_types::table
        .find(type_id)
        .filter(appointment_types::provider_id.eq(provider_id))
        .select(AppointmentType::as_select())
        .first(conn)
        .optional()
}

/// A provider with one of their appointment types, in one round trip (booking and
/// rescheduling need both); `None` when either is missing.
pub fn with_type(
    conn: &mut PgConnection,
    provider_id: Uuid,
    type_id: Uuid,
) -> QueryResult<Option<(Provider, AppointmentType)>> {
    providers::table
        .inner_join(appointment_types::table)
        .filter(providers::id.eq(provider_id))
        .filter(appointment_types::id.eq(type_id))
        .select((Provider::as_select(), AppointmentType::as_select()))
        .first(conn)
        .optional()
}

pub fn types(
    conn: &mut PgConnection,
    provider_id: Uuid,
    active_only: bool,
) -> QueryResult<Vec<AppointmentType>> {
    let mut query = appointment_types::table
        .filter(appointment_types::provider_id.eq(provider_id))
        .select(AppointmentType::as_select())
        .order(appointment_types::name.asc())
        .into_boxed();
    if active_only {
        query = query.filter(appointment_types::active.eq(true));
    }
    query.load(conn)
}
