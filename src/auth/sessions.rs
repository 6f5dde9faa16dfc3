//! Sign-in sessions and their refresh tokens, in PostgreSQL.
//!
//! A session is the family of refresh tokens descending from one login. Exchanging a
//! refresh token rotates it (the old one is marked, a new one issued). Presenting a
//! token that was already rotated means two parties hold it, one of them a thief, so
//! the whole family is revoked (OAuth 2.0 Security BCP, refresh token rotation).

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use uuid::Uuid;

use super::tokens::{new_refresh_token, refresh_token_hash};
use crate::context::Role;
use crate::error::Error;
use crate::schema::{accounts, auth_sessions, refresh_tokens};

/// Why a session ended; stored in `auth_sessions.revoked_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    TokenReuse,
    AccountDisabled,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::TokenReuse => "token_reuse",
            RevokeReason::AccountDisabled => "account_disabled",
        }
    }
}

/// A session just started, with the refresh token to hand to the client (once).
#[derive(Debug)]
pub struct Started {
    pub session_id: Uuid,
    pub refresh_token: String,
}

/// Starts a session for `account_id` with its first refresh token.
pub fn start(
    conn: &mut PgConnection,
    account_id: Uuid,
    refresh_ttl: std::time::Duration,
) -> Result<Started, Error> {
    let session_id = Uuid::now_v7();
    let (refresh_token, hash) = new_refresh_token()?;
    conn.transaction(|conn| {
        diesel::insert_into(auth_sessions::table)
            .values((
                auth_sessions::id.eq(session_id),
                auth_sessions::account_id.eq(account_id),
            ))
            .execute(conn)?;
        insert_refresh_token(conn, session_id, &hash, refresh_ttl)?;
        Ok::<_, Error>(())
    })?;
    Ok(Started {
        session_id,
        refresh_token,
    })
}

fn insert_refresh_token(
    conn: &mut PgConnection,
    session_id: Uuid,
    hash: &[u8; 32],
    ttl: std::time::Duration,
) -> QueryResult<usize> {
    let expires_at = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(30));
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::token_hash.eq(hash.as_slice()),
            refresh_tokens::session_id.eq(session_id),
            refresh_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
}

/// The outcome of presenting a refresh token.
#[derive(Debug)]
pub enum Refreshed {
    /// A fresh token replaced the presented one.
    Rotated {
        account_id: Uuid,
        role: Role,
        session_id: Uuid,
        refresh_token: String,
    },
    /// The token had already been exchanged: the session is now revoked.
    Reused {
        account_id: Uuid,
        role: Role,
        session_id: Uuid,
    },
    /// Unknown, expired, or its session or account has ended.
    Invalid,
}

#[derive(Debug, Queryable)]
struct TokenRow {
    session_id: Uuid,
    expires_at: DateTime<Utc>,
    rotated_at: Option<DateTime<Utc>>,
    session_revoked_at: Option<DateTime<Utc>>,
    account_id: Uuid,
    role: String,
    disabled_at: Option<DateTime<Utc>>,
}

/// Exchanges a refresh token, in one transaction. The rows are locked, so of two
/// concurrent exchanges of one token exactly one succeeds and the other is reuse.
pub fn rotate(
    conn: &mut PgConnection,
    presented: &str,
    ttl: std::time::Duration,
) -> Result<Refreshed, Error> {
    let hash = refresh_token_hash(presented);
    conn.transaction(|conn| {
        let row = refresh_tokens::table
            .inner_join(auth_sessions::table.inner_join(accounts::table))
            .filter(refresh_tokens::token_hash.eq(hash.as_slice()))
            .select((
                refresh_tokens::session_id,
                refresh_tokens::expires_at,
                refresh_tokens::rotated_at,
                auth_sessions::revoked_at,
                accounts::id,
                accounts::role,
                accounts::disabled_at,
            ))
            .for_update()
            .first::<TokenRow>(conn)
            .optional()?;
        let Some(row) = row else {
            return Ok(Refreshed::Invalid);
        };
        if row.session_revoked_at.is_some() || row.disabled_at.is_some() {
            return Ok(Refreshed::Invalid);
        }
        let role: Role = row
            .role
            .parse()
            .map_err(|_| Error::internal("an account has an unknown role"))?;
        if row.rotated_at.is_some() {
            revoke(conn, row.session_id, RevokeReason::TokenReuse)?;
            return Ok(Refreshed::Reused {
                account_id: row.account_id,
                role,
                session_id: row.session_id,
            });
        }
        if row.expires_at <= Utc::now() {
            return Ok(Refreshed::Invalid);
        }
        diesel::update(refresh_tokens::table.filter(refresh_tokens::token_hash.eq(hash.as_slice())))
            .set(refresh_tokens::rotated_at.eq(diesel::dsl::now))
            .execute(conn)?;
        let (refresh_token, new_hash) = new_refresh_token()?;
        insert_refresh_token(conn, row.session_id, &new_hash, ttl)?;
        diesel::update(auth_sessions::table.find(row.session_id))
            .set(auth_sessions::last_seen_at.eq(diesel::dsl::now))
            .execute(conn)?;
        Ok(Refreshed::Rotated {
            account_id: row.account_id,
            role,
            session_id: row.session_id,
            refresh_token,
        })
    })
}

/// Ends a session. Returns whether it was live. Its WebSockets, on any instance,
/// close when the `session.ended` event this writes reaches them.
pub fn revoke(conn: &mut PgConnection, session_id: Uuid, reason: RevokeReason) -> Result<bool, Error> {
    let ended: Option<Uuid> = diesel::update(
        auth_sessions::table
            .find(session_id)
            .filter(auth_sessions::revoked_at.is_null()),
    )
    .set((
        auth_sessions::revoked_at.eq(diesel::dsl::now),
        auth_sessions::revoked_reason.eq(reason.as_str()),
    ))
    .returning(auth_sessions::account_id)
    .get_result(conn)
    .optional()?;
    if let Some(account_id) = ended {
        announce_end(conn, account_id, session_id, reason)?;
    }
    Ok(ended.is_some())
}

fn announce_end(
    conn: &mut PgConnection,
    account_id: Uuid,
    session_id: Uuid,
    reason: RevokeReason,
) -> Result<(), Error> {
    crate::outbox::emit_for_account(
        conn,
        crate::outbox::kind::SESSION_ENDED,
        account_id,
        serde_json::json!({ "session_id": session_id, "reason": reason.as_str() }),
    )?;
    Ok(())
}

/// Ends every live session of an account; returns their ids.
pub fn revoke_all(
    conn: &mut PgConnection,
    account_id: Uuid,
    reason: RevokeReason,
) -> Result<Vec<Uuid>, Error> {
    let ended: Vec<Uuid> = diesel::update(
        auth_sessions::table
            .filter(auth_sessions::account_id.eq(account_id))
            .filter(auth_sessions::revoked_at.is_null()),
    )
    .set((
        auth_sessions::revoked_at.eq(diesel::dsl::now),
        auth_sessions::revoked_reason.eq(reason.as_str()),
    ))
    .returning(auth_sessions::id)
    .get_results(conn)?;
    for &session_id in &ended {
        announce_end(conn, account_id, session_id, reason)?;
    }
    Ok(ended)
}

/// Whether the session is live and its account enabled.
pub fn is_live(conn: &mut PgConnection, session_id: Uuid) -> Result<bool, Error> {
    let live = auth_sessions::table
        .inner_join(accounts::table)
        .filter(auth_sessions::id.eq(session_id))
        .filter(auth_sessions::revoked_at.is_null())
        .filter(accounts::disabled_at.is_null())
        .select(auth_sessions::id)
        .first::<Uuid>(conn)
        .optional()?;
    Ok(live.is_some())
}
