//! The demo clinic (`CAREWIRE_DEMO=true` or `carewire serve --demo`): one provider who
//! is always available, so that someone trying the browser client can register as a
//! patient and be in a video consultation a few minutes later.
//!
//! What it seeds, after migrations, at every start:
//! - a provider account, [`PROVIDER_EMAIL`] / [`PROVIDER_PASSWORD`] (published here and
//!   in the start-up log: a development-only account), named [`PROVIDER_NAME`];
//! - its public profile, in UTC, with a specialty;
//! - weekly hours covering every minute of every day;
//! - one appointment type, [`VISIT_TYPE_NAME`]: 15 minutes, video, no buffers, no
//!   minimum notice, no cancellation cutoff, bookable [`HORIZON_DAYS`] ahead.
//!
//! Slots are laid out every 15 minutes from midnight and may start right now, so the
//! next one starts within 15 minutes, and its consultation room is already open (rooms
//! open `CAREWIRE_CONSULT_OPENS_BEFORE_MINUTES`, 15 by default, before the start).
//!
//! Seeding is idempotent: it creates only what is missing and never overwrites what
//! exists (hours or a type the demo provider edited stay edited), under an advisory
//! lock so that instances starting together do not race. Everything goes through the
//! same domain functions, audit events (actor: system `demo`) and outbox events as the
//! API. Refused in production (see [`crate::config::Settings::check_demo`]).

use anyhow::Context;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use secrecy::SecretString;
use uuid::Uuid;

use crate::accounts::{self, Email};
use crate::audit::{self, Actor, AuditEvent, Code, DetailValue, action, purpose, resource};
use crate::auth::password;
use crate::context::Role;
use crate::crypto::Crypto;
use crate::db::Db;
use crate::outbox;
use crate::scheduling::availability::{self, WindowInput};
use crate::scheduling::providers::{self, ProfileInput, TypeInput};

/// The demo provider's sign-in email.
pub const PROVIDER_EMAIL: &str = "dr.demo@carewire.test";
/// The demo provider's password. Public on purpose: the demo is for development only.
pub const PROVIDER_PASSWORD: &str = "lantern stethoscope harbour 42";
/// The name patients see.
pub const PROVIDER_NAME: &str = "Dr Rosalind Demo";
pub const SPECIALTY: &str = "General practice";
/// UTC: the demo's hours mean the same to everyone, with no DST gaps.
pub const TIME_ZONE: &str = "UTC";
/// The one appointment type.
pub const VISIT_TYPE_NAME: &str = "Video visit";
pub const VISIT_MINUTES: i32 = 15;
/// How far ahead the visit can be booked.
pub const HORIZON_DAYS: i32 = 14;

/// The audit actor of everything seeded.
const ACTOR: Code = Code::new("demo");

/// Serializes seeding across instances starting on one database.
const LOCK_KEY: &str = "carewire.demo";

/// What [`seed`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    /// The provider (the same id as their account).
    pub provider_id: Uuid,
    /// The "Video visit" type.
    pub visit_type_id: Uuid,
    /// What this run created (`account`, `provider`, `availability`,
    /// `appointment_type`); empty when everything was already there.
    pub created: Vec<&'static str>,
}

/// Audits a change to what the provider offers (`resource` `id`) and tells anyone
/// watching the provider's slots to fetch them again, as the API does.
fn availability_changed(
    conn: &mut PgConnection,
    action: Code,
    resource: &'static str,
    id: Uuid,
    provider_id: Uuid,
) -> anyhow::Result<()> {
    audit::record(conn, &event(action, Code::new(resource), purpose::OPERATIONS, id))?;
    outbox::availability_changed(conn, provider_id)?;
    Ok(())
}

/// Weekly hours that cover every minute: 00:00–00:00 every day (an end not after its
/// start runs to the next day).
pub fn weekly_hours() -> Vec<WindowInput> {
    availability::every_day("00:00", "00:00")
}

/// The "Video visit" type.
pub fn visit_type() -> TypeInput {
    TypeInput {
        name: VISIT_TYPE_NAME.to_owned(),
        duration_minutes: VISIT_MINUTES,
        buffer_before_minutes: 0,
        buffer_after_minutes: 0,
        modality: "video".to_owned(),
        min_notice_minutes: 0,
        booking_horizon_days: HORIZON_DAYS,
        max_per_day: None,
        cancellation_cutoff_minutes: 0,
        active: true,
        reminder_offsets_minutes: None,
    }
}

/// Seeds the demo clinic; blocking (run it off the async runtime). Safe to call at
/// every start and from several instances at once.
pub fn seed(db: &Db, crypto: &Crypto) -> anyhow::Result<Seeded> {
    let email = Email::parse(PROVIDER_EMAIL)?;
    // argon2 is slow on purpose: hash before taking the connection and the lock, and
    // only when the account is missing (so a restart costs one query).
    let exists = {
        let mut conn = db.get_blocking()?;
        accounts::find_by_email(&mut conn, crypto, &email)?.is_some()
    };
    let hash = if exists {
        None
    } else {
        Some(hash_password(&email)?)
    };
    let mut conn = db.get_blocking()?;
    conn.transaction(|conn| seed_in(conn, crypto, &email, hash))
}

fn hash_password(email: &Email) -> anyhow::Result<String> {
    let secret = SecretString::from(PROVIDER_PASSWORD.to_owned());
    password::check_policy(&secret, &email.password_hints())?;
    Ok(password::hash(&secret)?)
}

fn event(action: Code, resource_type: Code, purpose: Code, id: Uuid) -> AuditEvent {
    AuditEvent::new(Actor::System { component: ACTOR }, action, resource_type, purpose).resource(id)
}

fn seed_in(
    conn: &mut PgConnection,
    crypto: &Crypto,
    email: &Email,
    hash: Option<String>,
) -> anyhow::Result<Seeded> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind::<diesel::sql_types::Text, _>(LOCK_KEY)
        .execute(conn)?;
    let mut created = Vec::new();

    let account = match accounts::find_by_email(conn, crypto, email)? {
        Some(account) => account,
        None => {
            // Hashed beforehand when it was missing at the first look; accounts are never
            // deleted, so this fallback is for the impossible case only.
            let hash = match hash {
                Some(hash) => hash,
                None => hash_password(email)?,
            };
            let account = accounts::create(conn, crypto, email, Role::Provider, hash)?;
            audit::record(
                conn,
                &event(
                    action::CREATE,
                    resource::ACCOUNT,
                    purpose::SYSTEM_ADMINISTRATION,
                    account.id,
                )
                .detail(
                    Code::new("role"),
                    DetailValue::Code(audit::role_code(Role::Provider)),
                ),
            )?;
            created.push("account");
            account
        }
    };
    anyhow::ensure!(
        account.role()? == Role::Provider,
        "the demo clinic cannot start: an account with the email {PROVIDER_EMAIL} exists and is not a provider's"
    );
    // A provider's profile has the id of its account.
    let provider_id = account.id;

    if providers::get(conn, provider_id)?.is_none() {
        let profile = ProfileInput {
            display_name: PROVIDER_NAME.to_owned(),
            specialty: Some(SPECIALTY.to_owned()),
            time_zone: TIME_ZONE.to_owned(),
            bio: Some("The demo clinic's doctor: available around the clock for a video visit.".to_owned()),
        }
        .validated()?;
        providers::create(conn, provider_id, &profile)?;
        audit::record(
            conn,
            &event(
                action::CREATE,
                Code::new("provider"),
                purpose::OPERATIONS,
                provider_id,
            ),
        )?;
        created.push("provider");
    }

    if availability::weekly(conn, provider_id)?.is_empty() {
        // Through the API's own validation, so the demo cannot hold hours the API
        // would refuse.
        let windows = weekly_hours()
            .iter()
            .enumerate()
            .map(|(i, w)| w.parse(i))
            .collect::<Result<Vec<_>, _>>()?;
        availability::replace_weekly(conn, provider_id, &windows)?;
        availability_changed(conn, action::UPDATE, "availability", provider_id, provider_id)?;
        created.push("availability");
    }

    let existing = providers::types(conn, provider_id, false)?
        .into_iter()
        .find(|t| t.name == VISIT_TYPE_NAME);
    let visit_type_id = match existing {
        Some(t) => t.id,
        None => {
            let t = providers::create_type(conn, provider_id, &visit_type().validated()?)?;
            availability_changed(conn, action::CREATE, "appointment_type", t.id, provider_id)?;
            created.push("appointment_type");
            t.id
        }
    };

    Ok(Seeded {
        provider_id,
        visit_type_id,
        created,
    })
}

/// Seeds the demo clinic at start-up and says loudly that it is on.
pub async fn seed_at_startup(db: &Db, crypto: &Crypto) -> anyhow::Result<Seeded> {
    let (db, crypto) = (db.clone(), crypto.clone());
    let seeded = tokio::task::spawn_blocking(move || seed(&db, &crypto))
        .await
        .context("seeding the demo clinic was interrupted")?
        .context("seeding the demo clinic failed")?;
    tracing::warn!(
        provider.id = %seeded.provider_id,
        created = ?seeded.created,
        "DEMO CLINIC ON (development only): sign in as the demo provider {PROVIDER_EMAIL} with the password \
         \"{PROVIDER_PASSWORD}\"; this account's password is public, never enable the demo on a real deployment"
    );
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use std::collections::HashMap;

    use crate::scheduling::slots::{self, Input};

    #[test]
    fn the_password_passes_the_servers_policy() {
        let email = Email::parse(PROVIDER_EMAIL).unwrap();
        password::check_policy(
            &SecretString::from(PROVIDER_PASSWORD.to_owned()),
            &email.password_hints(),
        )
        .unwrap();
    }

    #[test]
    fn the_seeded_inputs_pass_the_apis_validation() {
        visit_type().validated().unwrap();
        for (i, w) in weekly_hours().iter().enumerate() {
            w.parse(i).unwrap();
        }
        assert!(weekly_hours().len() <= 100, "the API accepts at most 100 windows");
    }

    /// Whatever the time, the next slot starts within 15 minutes; and the hours leave
    /// no gap, not even around midnight or noon.
    #[test]
    fn a_visit_always_starts_within_fifteen_minutes() {
        let weekly: Vec<_> = weekly_hours()
            .iter()
            .enumerate()
            .map(|(i, w)| w.parse(i).unwrap())
            .collect();
        let rules = crate::scheduling::slots::TypeRules {
            duration: Duration::minutes(VISIT_MINUTES.into()),
            buffer_before: Duration::zero(),
            buffer_after: Duration::zero(),
            min_notice: Duration::zero(),
            horizon: Duration::days(HORIZON_DAYS.into()),
            max_per_day: None,
        };
        let monday = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
        // Every 7 minutes over a week, so every quarter hour and both boundaries
        // (noon, midnight, the week's turn) are crossed.
        for step in 0..(7 * 24 * 60 / 7 + 1) {
            let now = monday + Duration::minutes(step * 7) + Duration::seconds(13);
            let found = slots::compute(&Input {
                time_zone: chrono_tz::UTC,
                weekly: &weekly,
                overrides: &[],
                rules,
                busy: &[],
                booked_per_day: &HashMap::new(),
                from: now,
                to: now + Duration::hours(1),
                now,
            });
            assert_eq!(found.len(), 4, "at {now}");
            let first = &found[0];
            assert!(
                first.starts_at >= now && first.starts_at - now <= Duration::minutes(15),
                "at {now}"
            );
            assert!(
                found
                    .windows(2)
                    .all(|w| w[1].starts_at - w[0].starts_at == Duration::minutes(15))
            );
        }
    }
}
