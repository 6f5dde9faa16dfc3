//! WebSocket tickets: browsers cannot set an `Authorization` header on a WebSocket
//! handshake, and a token in a URL ends up in logs. So a signed-in client first asks
//! for a ticket (`POST /v1/ws/ticket`), then connects with `?ticket=…`: the ticket is
//! random, stored only as its SHA-256, valid for seconds, and spent on first use, on
//! whichever instance the socket lands.

use base64::Engine;
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::context::{Caller, Role};
use crate::schema::ws_tickets;

fn hash(ticket: &str) -> Vec<u8> {
    Sha256::digest(ticket.as_bytes()).to_vec()
}

/// Issues a ticket for `caller`, valid until `expires_at`.
pub fn issue(
    conn: &mut PgConnection,
    caller: &Caller,
    expires_at: DateTime<Utc>,
) -> Result<String, crate::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| crate::Error::internal("the random number generator failed"))?;
    let ticket = format!(
        "cwt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    diesel::insert_into(ws_tickets::table)
        .values((
            ws_tickets::hash.eq(hash(&ticket)),
            ws_tickets::account_id.eq(caller.account_id),
            ws_tickets::session_id.eq(caller.session_id),
            ws_tickets::role.eq(caller.role.as_str()),
            ws_tickets::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(ticket)
}

/// Spends a ticket: the caller it was issued to, if it exists and has not expired.
pub fn redeem(conn: &mut PgConnection, ticket: &str) -> QueryResult<Option<Caller>> {
    if !ticket.starts_with("cwt_") || ticket.len() > 100 {
        return Ok(None);
    }
    let row: Option<(Uuid, Uuid, String)> = diesel::delete(
        ws_tickets::table
            .filter(ws_tickets::hash.eq(hash(ticket)))
            .filter(ws_tickets::expires_at.gt(diesel::dsl::now)),
    )
    .returning((ws_tickets::account_id, ws_tickets::session_id, ws_tickets::role))
    .get_result(conn)
    .optional()?;
    Ok(row.and_then(|(account_id, session_id, role)| {
        Some(Caller {
            account_id,
            session_id,
            role: role.parse::<Role>().ok()?,
        })
    }))
}

/// Forgets expired tickets.
pub fn prune(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::delete(ws_tickets::table.filter(ws_tickets::expires_at.le(diesel::dsl::now))).execute(conn)
}
