//! The webhook worker: sends each delivery row as a signed POST, retrying with
//! exponential backoff until the receiver answers 2xx or the attempts run out.
//!
//! Signing follows the common `t=…,v1=…` scheme: `Carewire-Signature: t=<unix
//! seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`; receivers recompute it over
//! the raw body and reject stale timestamps. `Carewire-Delivery` (the delivery id) is
//! the same on every retry, so receivers can drop duplicates: delivery is at least
//! once.
//!
//! Every instance runs the worker. A delivery is leased before it is sent (its next
//! attempt moved past the request timeout), so two instances never send it at once,
//! and a crash mid-send only delays the retry.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use uuid::Uuid;

use crate::config::WebhookSettings;
use crate::error::Error;
use crate::schema::webhook_deliveries;
use crate::state::AppState;

/// Deliveries claimed per round, per instance.
const BATCH: i64 = 50;

/// The signature header value for `body` sent at `at`.
pub fn signature(secret: &[u8], at: DateTime<Utc>, body: &[u8]) -> String {
    let t = at.timestamp();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long after attempt `n` (1-based) the next one waits: base, 2×base, 4×base…,
/// capped at an hour.
pub fn backoff(base: StdDuration, attempt: i32) -> Duration {
    let factor = 2u32.saturating_pow(u32::try_from(attempt.max(1) - 1).unwrap_or(0).min(20));
    let wait = base.saturating_mul(factor).min(StdDuration::from_secs(3600));
    Duration::from_std(wait).unwrap_or(Duration::hours(1))
}

#[derive(Debug, Queryable)]
struct Claimed {
    id: Uuid,
    body: serde_json::Value,
    attempts: i32,
}

/// Leases up to [`BATCH`] due deliveries.
fn claim(conn: &mut PgConnection, now: DateTime<Utc>, lease: Duration) -> QueryResult<Vec<Claimed>> {
    conn.transaction(|conn| {
        let due: Vec<Uuid> = webhook_deliveries::table
            .filter(webhook_deliveries::status.eq("pending"))
            .filter(webhook_deliveries::next_attempt_at.le(now))
            .order(webhook_deliveries::next_attempt_at.asc())
            .limit(BATCH)
            .select(webhook_deliveries::id)
            .for_update()
            .skip_locked()
            .load(conn)?;
        diesel::update(webhook_deliveries::table.filter(webhook_deliveries::id.eq_any(&due)))
            .set((
                webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1),
                webhook_deliveries::next_attempt_at.eq(now + lease),
            ))
            .returning((
                webhook_deliveries::id,
                webhook_deliveries::body,
                webhook_deliveries::attempts,
            ))
            .load(conn)
    })
}

/// What one attempt came to.
#[derive(Debug)]
enum Outcome {
    Delivered(u16),
    Refused(u16),
    Failed(&'static str),
}

async fn send(
    client: &reqwest::Client,
    settings: &WebhookSettings,
    now: DateTime<Utc>,
    delivery: &Claimed,
) -> Outcome {
    let body = match serde_json::to_vec(&delivery.body) {
        Ok(body) => body,
        Err(_) => return Outcome::Failed("unserializable body"),
    };
    let signature = signature(settings.secret.expose_secret(), now, &body);
    let request = client
        .post(&settings.url)
        .header("content-type", "application/json")
        .header("carewire-signature", signature)
        .header("carewire-delivery", delivery.id.to_string())
        .header("carewire-attempt", delivery.attempts.to_string())
        .body(body);
    match request.send().await {
        Ok(res) if res.status().is_success() => Outcome::Delivered(res.status().as_u16()),
        Ok(res) => Outcome::Refused(res.status().as_u16()),
        Err(e) if e.is_timeout() => Outcome::Failed("timeout"),
        Err(e) if e.is_connect() => Outcome::Failed("connection failed"),
        Err(_) => Outcome::Failed("request failed"),
    }
}

fn record(
    conn: &mut PgConnection,
    settings: &WebhookSettings,
    now: DateTime<Utc>,
    delivery: &Claimed,
    outcome: &Outcome,
) -> QueryResult<()> {
    let target = webhook_deliveries::table.find(delivery.id);
    let (status, error) = match outcome {
        Outcome::Delivered(code) => {
            diesel::update(target)
                .set((
                    webhook_deliveries::status.eq("delivered"),
                    webhook_deliveries::last_status.eq(Some(i32::from(*code))),
                    webhook_deliveries::last_error.eq(None::<String>),
                    webhook_deliveries::delivered_at.eq(Some(now)),
                ))
                .execute(conn)?;
            return Ok(());
        }
        Outcome::Refused(code) => (Some(i32::from(*code)), None),
        Outcome::Failed(reason) => (None, Some((*reason).to_owned())),
    };
    let exhausted = delivery.attempts >= i32::try_from(settings.max_attempts).unwrap_or(i32::MAX);
    diesel::update(target)
        .set((
            webhook_deliveries::status.eq(if exhausted { "failed" } else { "pending" }),
            webhook_deliveries::last_status.eq(status),
            webhook_deliveries::last_error.eq(error),
            webhook_deliveries::next_attempt_at.eq(now + backoff(settings.backoff, delivery.attempts)),
        ))
        .execute(conn)?;
    if exhausted {
        tracing::warn!(delivery.id = %delivery.id, attempts = delivery.attempts, "webhook delivery failed for good");
    }
    Ok(())
}

/// One round: claims due deliveries, sends them concurrently, records each outcome.
/// Returns how many were attempted.
pub async fn run_once(state: &AppState, client: &reqwest::Client) -> Result<usize, Error> {
    let Some(settings) = state.settings.webhook.as_ref() else {
        return Ok(0);
    };
    let now = state.clock.now();
    let lease = Duration::from_std(settings.timeout * 2).unwrap_or(Duration::minutes(1));
    let claimed = state.db.run(move |conn| Ok(claim(conn, now, lease)?)).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let outcomes =
        futures_util::future::join_all(claimed.iter().map(|d| send(client, settings, now, d))).await;
    for (delivery, outcome) in claimed.iter().zip(&outcomes) {
        match outcome {
            Outcome::Delivered(_) => {
                metrics::counter!("webhook_deliveries_total", "outcome" => "delivered").increment(1)
            }
            _ => metrics::counter!("webhook_deliveries_total", "outcome" => "retry").increment(1),
        }
        tracing::debug!(delivery.id = %delivery.id, attempt = delivery.attempts, outcome = ?outcome, "webhook attempt");
    }
    let count = claimed.len();
    let state2 = state.clone();
    state
        .db
        .run(move |conn| {
            let Some(settings) = state2.settings.webhook.as_ref() else {
                return Ok(());
            };
            let done_at = state2.clock.now();
            for (delivery, outcome) in claimed.iter().zip(&outcomes) {
                record(conn, settings, done_at, delivery, outcome)?;
            }
            Ok(())
        })
        .await?;
    Ok(count)
}

/// The HTTP client the worker uses.
pub fn client(settings: &WebhookSettings) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("carewire-webhook/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"secret",b"1700000000.{}",hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"secret", at, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn backoff_doubles_from_the_base_and_is_capped() {
        let base = StdDuration::from_millis(500);
        assert_eq!(backoff(base, 1), Duration::milliseconds(500));
        assert_eq!(backoff(base, 2), Duration::milliseconds(1000));
        assert_eq!(backoff(base, 4), Duration::milliseconds(4000));
        assert_eq!(backoff(base, 40), Duration::hours(1));
    }
}
