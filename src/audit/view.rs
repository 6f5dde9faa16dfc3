//! How an audit row is shown: in the admin API and in `carewire audit export`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use carewire_audit::store::Row;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// Row id: the pagination cursor's unit.
    pub id: i64,
    /// Position in the chain; `null` until sealed (normally under a second).
    pub seq: Option<i64>,
    pub recorded_at: DateTime<Utc>,
    pub actor: ActorView,
    pub action: String,
    pub resource: ResourceView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<Uuid>,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub purpose: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActorView {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResourceView {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
}

impl From<Row> for EventView {
    fn from(row: Row) -> EventView {
        let e = row.event;
        EventView {
            id: e.id,
            seq: row.chain.as_ref().map(|c| c.seq),
            recorded_at: e.recorded_at,
            actor: ActorView {
                kind: e.actor_kind,
                id: e.actor_id,
                role: e.actor_role,
            },
            action: e.action,
            resource: ResourceView {
                kind: e.resource_type,
                id: e.resource_id,
            },
            patient_id: e.patient_id,
            outcome: e.outcome,
            failure_reason: e.failure_reason,
            purpose: e.purpose,
            request_id: e.request_id,
            client_ip: e.client_ip,
            user_agent: e.user_agent,
            details: e.details,
            hash: row.chain.map(|c| hex::encode(c.hash)),
        }
    }
}
