//! Break-glass: a provider opens a record outside the care relationship by stating a
//! reason. The grant lasts `CAREWIRE_BREAK_GLASS_MINUTES` (60 by default); its start
//! and its end are audited (`break_glass_start`, `break_glass_end`), every access
//! through it is audited with the emergency purpose (`ETREAT`), it shows in the
//! patient's access log, and admins review grants with their reasons.
//!
//! The reason is free text a clinician types, so it is sealed like PHI.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, Actor, Code, DetailValue, action, purpose, resource};
use crate::crypto::{Crypto, FieldContext};
use crate::error::Error;
use crate::schema::{accounts, break_glass_grants};

fn reason_field(id: Uuid) -> FieldContext {
    crate::crypto::field("break_glass_grants", "reason", id)
}

/// The live grant of `provider` for `patient`, if any.
pub fn live_grant(conn: &mut PgConnection, provider: Uuid, patient: Uuid) -> QueryResult<Option<Uuid>> {
    break_glass_grants::table
        .filter(break_glass_grants::provider_id.eq(provider))
        .filter(break_glass_grants::patient_id.eq(patient))
        .filter(break_glass_grants::ended_at.is_null())
        .filter(break_glass_grants::expires_at.gt(diesel::dsl::now))
        .select(break_glass_grants::id)
        .first(conn)
        .optional()
}

/// A new grant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Granted {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Opens a grant (reason already validated), in the caller's transaction.
pub fn open(
    conn: &mut PgConnection,
    crypto: &Crypto,
    provider: Uuid,
    patient: Uuid,
    reason: &str,
    duration: std::time::Duration,
) -> Result<Granted, Error> {
    let id = Uuid::now_v7();
    let now = Utc::now();
    let expires_at = now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::hours(1));
    diesel::insert_into(break_glass_grants::table)
        .values((
            break_glass_grants::id.eq(id),
            break_glass_grants::provider_id.eq(provider),
            break_glass_grants::patient_id.eq(patient),
            break_glass_grants::reason_enc.eq(crypto.encrypt_str(&reason_field(id), reason)?),
            break_glass_grants::started_at.eq(now),
            break_glass_grants::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(Granted {
        id,
        patient_id: patient,
        started_at: now,
        expires_at,
    })
}

/// Ends expired grants and records each end, all in one transaction; several
/// instances share the work through `SKIP LOCKED`. Returns how many ended.
pub fn end_expired(conn: &mut PgConnection) -> Result<usize, Error> {
    conn.transaction(|conn| {
        #[derive(QueryableByName)]
        struct Ended {
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            id: Uuid,
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            provider_id: Uuid,
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            patient_id: Uuid,
        }
        let ended: Vec<Ended> = diesel::sql_query(
            "UPDATE break_glass_grants SET ended_at = expires_at \
             WHERE id IN (SELECT id FROM break_glass_grants WHERE ended_at IS NULL AND expires_at <= now() \
                          ORDER BY expires_at LIMIT 100 FOR UPDATE SKIP LOCKED) \
             RETURNING id, provider_id, patient_id",
        )
        .load(conn)?;
        for grant in &ended {
            let event = audit::AuditEvent::new(
                Actor::System {
                    component: Code::new("break_glass_expiry"),
                },
                action::BREAK_GLASS_END,
                resource::PATIENT,
                purpose::EMERGENCY,
            )
            .resource(grant.patient_id)
            .patient(grant.patient_id)
            .detail(Code::new("grant_id"), DetailValue::Id(grant.id))
            .detail(Code::new("provider_id"), DetailValue::Id(grant.provider_id))
            .detail(Code::new("ended"), DetailValue::Code(Code::new("expired")));
            audit::record(conn, &event)?;
        }
        Ok(ended.len())
    })
}

/// A grant as admins review it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Review {
    pub id: Uuid,
    pub provider_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_name: Option<String>,
    pub patient_id: Uuid,
    pub reason: String,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Review {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Review")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

type ReviewRow = (
    Uuid,
    Uuid,
    Option<String>,
    Uuid,
    Vec<u8>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// Grants started at or after `since`, newest first, with their reasons.
pub fn review(
    conn: &mut PgConnection,
    crypto: &Crypto,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Review>, Error> {
    let rows: Vec<ReviewRow> = break_glass_grants::table
        .inner_join(accounts::table.on(accounts::id.eq(break_glass_grants::provider_id)))
        .filter(break_glass_grants::started_at.ge(since))
        .order(break_glass_grants::started_at.desc())
        .limit(limit)
        .select((
            break_glass_grants::id,
            break_glass_grants::provider_id,
            accounts::display_name,
            break_glass_grants::patient_id,
            break_glass_grants::reason_enc,
            break_glass_grants::started_at,
            break_glass_grants::expires_at,
            break_glass_grants::ended_at,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(
            |(id, provider_id, provider_name, patient_id, reason, started_at, expires_at, ended_at)| {
                Ok(Review {
                    id,
                    provider_id,
                    provider_name,
                    patient_id,
                    reason: crypto.decrypt_string(&reason_field(id), &reason)?.to_string(),
                    started_at,
                    expires_at,
                    ended_at,
                })
            },
        )
        .collect()
}
