//! Weekly hours and dated overrides, in the provider's wall-clock time.

use chrono::{NaiveDateTime, NaiveTime, Weekday};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::slots::{Override, OverrideKind, WeeklyWindow};
use crate::error::Error;
use crate::schema::{availability_overrides, availability_rules};

/// One weekly window as the API spells it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowInput {
    /// `monday` … `sunday`.
    pub weekday: String,
    /// `HH:MM`, local time.
    pub start: String,
    /// `HH:MM`, local time; at or before `start` means the next day.
    pub end: String,
}

const DAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("saturday", Weekday::Sat),
    ("sunday", Weekday::Sun),
];

/// The same window on every day of the week, as the API spells it. An `end` at or
/// before `start` runs to the next day, so `00:00`–`00:00` is every minute.
pub fn every_day(start: &str, end: &str) -> Vec<WindowInput> {
    DAYS.iter()
        .map(|(day, _)| WindowInput {
            weekday: (*day).to_owned(),
            start: start.to_owned(),
            end: end.to_owned(),
        })
        .collect()
}

fn weekday_name(day: Weekday) -> &'static str {
    DAYS.iter().find(|(_, d)| *d == day).map_or("monday", |(n, _)| n)
}

fn parse_time(field: &str, value: &str) -> Result<NaiveTime, Error> {
    NaiveTime::parse_from_str(value, "%H:%M")
        .map_err(|_| Error::validation(field.to_owned(), "must be a time as HH:MM"))
}

impl WindowInput {
    pub fn parse(&self, index: usize) -> Result<WeeklyWindow, Error> {
        let weekday = DAYS
            .iter()
            .find(|(n, _)| *n == self.weekday.to_ascii_lowercase())
            .map(|(_, d)| *d)
            .ok_or_else(|| {
                Error::validation(format!("windows[{index}].weekday"), "must be monday to sunday")
            })?;
        let start = parse_time(&format!("windows[{index}].start"), &self.start)?;
        let end = parse_time(&format!("windows[{index}].end"), &self.end)?;
        // An end not after the start runs past midnight; an end equal to it is 24 hours.
        Ok(WeeklyWindow { weekday, start, end })
    }

    pub fn from_window(w: &WeeklyWindow) -> WindowInput {
        WindowInput {
            weekday: weekday_name(w.weekday).to_owned(),
            start: w.start.format("%H:%M").to_string(),
            end: w.end.format("%H:%M").to_string(),
        }
    }
}

pub fn weekly(conn: &mut PgConnection, provider_id: Uuid) -> QueryResult<Vec<WeeklyWindow>> {
    let rows: Vec<(i16, NaiveTime, NaiveTime)> = availability_rules::table
        .filter(availability_rules::provider_id.eq(provider_id))
        .select((
            availability_rules::weekday,
            availability_rules::start_time,
            availability_rules::end_time,
        ))
        .order((
            availability_rules::weekday.asc(),
            availability_rules::start_time.asc(),
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(day, start, end)| {
            let weekday = DAYS.get(usize::try_from(day - 1).ok()?)?.1;
            Some(WeeklyWindow { weekday, start, end })
        })
        .collect())
}

/// Replaces the weekly hours.
pub fn replace_weekly(
    conn: &mut PgConnection,
    provider_id: Uuid,
    windows: &[WeeklyWindow],
) -> QueryResult<()> {
    diesel::delete(availability_rules::table.filter(availability_rules::provider_id.eq(provider_id)))
        .execute(conn)?;
    for w in windows {
        diesel::insert_into(availability_rules::table)
            .values((
                availability_rules::id.eq(Uuid::now_v7()),
                availability_rules::provider_id.eq(provider_id),
                availability_rules::weekday.eq(i16::try_from(w.weekday.number_from_monday()).unwrap_or(1)),
                availability_rules::start_time.eq(w.start),
                availability_rules::end_time.eq(w.end),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// A dated override as the API spells it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideInput {
    /// `extra` hours or `blocked` time.
    pub kind: String,
    /// Local time, `YYYY-MM-DDTHH:MM`.
    pub starts_local: String,
    pub ends_local: String,
}

fn parse_local(field: &'static str, value: &str) -> Result<NaiveDateTime, Error> {
    NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| Error::validation(field, "must be a local date-time as YYYY-MM-DDTHH:MM"))
}

impl OverrideInput {
    pub fn parse(&self) -> Result<Override, Error> {
        let kind = match self.kind.as_str() {
            "extra" => OverrideKind::Extra,
            "blocked" => OverrideKind::Blocked,
            _ => return Err(Error::validation("kind", "must be extra or blocked")),
        };
        let starts_local = parse_local("starts_local", &self.starts_local)?;
        let ends_local = parse_local("ends_local", &self.ends_local)?;
        if ends_local <= starts_local {
            return Err(Error::validation("ends_local", "must be after starts_local"));
        }
        if ends_local - starts_local > chrono::Duration::days(366) {
            return Err(Error::validation(
                "ends_local",
                "an override spans at most a year",
            ));
        }
        Ok(Override {
            kind,
            starts_local,
            ends_local,
        })
    }
}

/// A stored override.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OverrideView {
    pub id: Uuid,
    pub kind: String,
    pub starts_local: NaiveDateTime,
    pub ends_local: NaiveDateTime,
}

pub fn add_override(conn: &mut PgConnection, provider_id: Uuid, o: &Override) -> QueryResult<OverrideView> {
    let id = Uuid::now_v7();
    let kind = match o.kind {
        OverrideKind::Extra => "extra",
        OverrideKind::Blocked => "blocked",
    };
    diesel::insert_into(availability_overrides::table)
        .values((
            availability_overrides::id.eq(id),
            availability_overrides::provider_id.eq(provider_id),
            availability_overrides::kind.eq(kind),
            availability_overrides::starts_local.eq(o.starts_local),
            availability_overrides::ends_local.eq(o.ends_local),
        ))
        .execute(conn)?;
    Ok(OverrideView {
        id,
        kind: kind.to_owned(),
        starts_local: o.starts_local,
        ends_local: o.ends_local,
    })
}

pub fn delete_override(conn: &mut PgConnection, provider_id: Uuid, id: Uuid) -> QueryResult<bool> {
    diesel::delete(
        availability_overrides::table
            .find(id)
            .filter(availability_overrides::provider_id.eq(provider_id)),
    )
    .execute(conn)
    .map(|n| n == 1)
}

/// Overrides that touch [from, to) local, or all when unbounded.
pub fn overrides(
    conn: &mut PgConnection,
    provider_id: Uuid,
    range: Option<(NaiveDateTime, NaiveDateTime)>,
) -> QueryResult<Vec<OverrideView>> {
    let mut query = availability_overrides::table
        .filter(availability_overrides::provider_id.eq(provider_id))
        .select((
            availability_overrides::id,
            availability_overrides::kind,
            availability_overrides::starts_local,
            availability_overrides::ends_local,
        ))
        .order(availability_overrides::starts_local.asc())
        .into_boxed();
    if let Some((from, to)) = range {
        query = query
            .filter(availability_overrides::ends_local.gt(from))
            .filter(availability_overrides::starts_local.lt(to));
    }
    Ok(query
        .load::<(Uuid, String, NaiveDateTime, NaiveDateTime)>(conn)?
        .into_iter()
        .map(|(id, kind, starts_local, ends_local)| OverrideView {
            id,
            kind,
            starts_local,
            ends_local,
        })
        .collect())
}

pub fn to_override(view: &OverrideView) -> Override {
    Override {
        kind: if view.kind == "extra" {
            OverrideKind::Extra
        } else {
            OverrideKind::Blocked
        },
        starts_local: view.starts_local,
        ends_local: view.ends_local,
    }
}
