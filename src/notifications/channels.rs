//! Delivery channels. Each gets every new notification inside the transaction that
//! creates it, and only records what it will deliver (an outbox row, a delivery
//! row): sending happens after commit, so a rolled-back notification is never sent
//! and a committed one is never lost.
//!
//! A new channel (SMS, e-mail, push) is one more implementation of [`Channel`] and a
//! worker that drains its rows.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde_json::json;
use uuid::Uuid;

use super::Notification;
use crate::schema::{events, webhook_deliveries};

pub trait Channel: Send + Sync + std::fmt::Debug {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Records the delivery of `batch`, in the caller's transaction.
    fn deliver(&self, conn: &mut PgConnection, batch: &[Notification]) -> QueryResult<()>;
}

/// The WebSocket: a `notification` event in the outbox, for the account's sockets on
/// every instance; offline users get it on resume, or as unread on their next connect.
#[derive(Debug, Clone, Copy)]
pub struct WebSocket;

impl Channel for WebSocket {
    fn name(&self) -> &'static str {
        "websocket"
    }

    fn deliver(&self, conn: &mut PgConnection, batch: &[Notification]) -> QueryResult<()> {
        let rows: Vec<_> = batch
            .iter()
            .map(|n| {
                (
                    events::kind.eq(crate::outbox::kind::NOTIFICATION),
                    events::account_id.eq(Some(n.account_id)),
                    events::appointment_id.eq(n.appointment_id),
                    events::payload.eq(view(n)),
                )
            })
            .collect();
        for chunk in rows.chunks(10_000) {
            diesel::insert_into(events::table).values(chunk).execute(conn)?;
        }
        Ok(())
    }
}

/// The webhook: a delivery row the webhook worker sends, signed, with retries.
#[derive(Debug, Clone, Copy)]
pub struct Webhook;

impl Channel for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn deliver(&self, conn: &mut PgConnection, batch: &[Notification]) -> QueryResult<()> {
        let rows: Vec<_> = batch
            .iter()
            .map(|n| {
                let id = Uuid::now_v7();
                (
                    webhook_deliveries::id.eq(id),
                    webhook_deliveries::notification_id.eq(n.id),
                    webhook_deliveries::body.eq(json!({
                        "id": id,
                        "type": "notification.created",
                        "created_at": n.created_at,
                        "account_id": n.account_id,
                        "notification": view(n),
                    })),
                    webhook_deliveries::next_attempt_at.eq(n.created_at),
                )
            })
            .collect();
        for chunk in rows.chunks(10_000) {
            diesel::insert_into(webhook_deliveries::table)
                .values(chunk)
                .execute(conn)?;
        }
        Ok(())
    }
}

/// A notification as clients see it.
pub fn view(n: &Notification) -> serde_json::Value {
    json!({
        "id": n.id,
        "kind": n.kind,
        "appointment_id": n.appointment_id,
        "payload": n.payload,
        "late": n.late,
        "created_at": n.created_at,
        "read_at": n.read_at,
    })
}
