//! Accounts: patients, providers and admins who sign in.
//!
//! An account's email is its sign-in name and a contact detail, so it is stored only
//! encrypted (`email_enc`) and found through a keyed blind index (`email_bidx`), which
//! also keeps emails unique regardless of case. Patients register themselves;
//! providers and admins are created by an admin or with `carewire user create`.

pub mod routes;
pub mod session_routes;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::sessions::{self, RevokeReason};
use crate::context::Role;
use crate::crypto::{self, BlindIndex, Crypto};
use crate::error::Error;
use crate::schema::accounts;

/// The blind index behind sign-in by email: full length, so it can be UNIQUE.
pub const EMAIL_INDEX: BlindIndex = BlindIndex::new("accounts.email", 32);

/// A normalized email address (trimmed, lower case). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Email([redacted])")
    }
}

impl Email {
    /// Parses an address as typed by a person. Deliberately simple: one `@`, a local
    /// part and a dotted domain, no spaces, at most 254 characters.
    pub fn parse(raw: &str) -> Result<Email, Error> {
        let invalid = || Error::validation("email", "must be a valid email address");
        let email = raw.trim().to_lowercase();
        if email.is_empty() || email.chars().count() > 254 {
            return Err(invalid());
        }
        let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
        let bad_char = |c: char| c.is_whitespace() || c.is_control() || c == '@';
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !domain.chars().any(bad_char);
        let local_ok = !local.is_empty() && local.chars().count() <= 64 && !local.chars().any(bad_char);
        if !(domain_ok && local_ok) {
            return Err(invalid());
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parts a password must not be built from.
    pub fn password_hints(&self) -> Vec<&str> {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or((&self.0, ""));
        vec![local, domain]
    }
}

/// An account row.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = accounts)]
pub struct Account {
    pub id: Uuid,
    pub role: String,
    pub email_enc: Vec<u8>,
    pub password_hash: String,
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("disabled", &self.disabled_at.is_some())
            .finish_non_exhaustive()
    }
}

impl Account {
    pub fn role(&self) -> Result<Role, Error> {
        self.role
            .parse()
            .map_err(|_| Error::internal("an account has an unknown role"))
    }
}

/// What the API shows of an account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<DateTime<Utc>>,
}

fn email_field(id: Uuid) -> crypto::FieldContext {
    crypto::field("accounts", "email", id)
}

/// The blind index of an email.
pub fn email_index(crypto: &Crypto, email: &Email) -> Vec<u8> {
    crypto.blind_index(&EMAIL_INDEX, email.as_str().as_bytes())
}

/// A staff member's name as shown to others (access logs, the provider directory).
pub fn parse_display_name(role: Role, name: Option<&str>) -> Result<Option<String>, Error> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if role == Role::Patient {
        // A patient's name is PHI: it lives encrypted in their patient record.
        return Err(Error::validation(
            "display_name",
            "is only for providers and admins",
        ));
    }
    crate::text::parse("display_name", name, crate::text::Rules::line(100)).map(Some)
}

/// Sets a staff member's display name.
pub fn set_display_name(conn: &mut PgConnection, id: Uuid, name: Option<&str>) -> Result<(), Error> {
    diesel::update(accounts::table.find(id))
        .set(accounts::display_name.eq(name))
        .execute(conn)?;
    Ok(())
}

/// Creates an account. An email already in use is a 409 `email_taken`.
pub fn create(
    conn: &mut PgConnection,
    crypto: &Crypto,
    email: &Email,
    role: Role,
    password_hash: String,
) -> Result<Account, Error> {
    let id = Uuid::now_v7();
    let inserted = diesel::insert_into(accounts::table)
        .values((
            accounts::id.eq(id),
            accounts::role.eq(role.as_str()),
            accounts::email_bidx.eq(email_index(crypto, email)),
            accounts::email_enc.eq(crypto.encrypt_str(&email_field(id), email.as_str())?),
            accounts::password_hash.eq(password_hash),
        ))
        .returning(Account::as_returning())
        .get_result(conn);
    match inserted {
        Ok(account) => Ok(account),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Err(Error::conflict(
            "email_taken",
            "an account with this email already exists",
        )),
        Err(e) => Err(e.into()),
    }
}

pub fn find(conn: &mut PgConnection, id: Uuid) -> Result<Account, Error> {
    Ok(accounts::table
        .find(id)
        .select(Account::as_select())
        .first(conn)?)
}

pub fn find_by_email(
    conn: &mut PgConnection,
    crypto: &Crypto,
    email: &Email,
) -> Result<Option<Account>, Error> {
    Ok(accounts::table
        .filter(accounts::email_bidx.eq(email_index(crypto, email)))
        .select(Account::as_select())
        .first(conn)
        .optional()?)
}

/// Disables an account and ends all its sessions, in one transaction. Returns the
/// account and the sessions that ended.
pub fn disable(conn: &mut PgConnection, id: Uuid) -> Result<(Account, Vec<Uuid>), Error> {
    conn.transaction(|conn| {
        let account = diesel::update(accounts::table.find(id))
            .set((
                accounts::disabled_at.eq(diesel::dsl::now),
                accounts::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Account::as_returning())
            .get_result(conn)?;
        let ended = sessions::revoke_all(conn, id, RevokeReason::AccountDisabled)?;
        // Its WebSockets close on every instance when this reaches them.
        crate::outbox::emit_for_account(
            conn,
            crate::outbox::kind::ACCOUNT_DISABLED,
            id,
            serde_json::json!({}),
        )?;
        Ok((account, ended))
    })
}

/// The API view of an account (decrypts the email).
pub fn view(crypto: &Crypto, account: &Account) -> Result<AccountView, Error> {
    let email = crypto.decrypt_string(&email_field(account.id), &account.email_enc)?;
    Ok(AccountView {
        id: account.id,
        email: email.to_string(),
        role: account.role()?,
        created_at: account.created_at,
        disabled_at: account.disabled_at,
    })
}

/// The patient record of an account, if it has one.
pub fn patient_id(conn: &mut PgConnection, account_id: Uuid) -> QueryResult<Option<Uuid>> {
    crate::schema::patients::table
        .filter(crate::schema::patients::account_id.eq(account_id))
        .select(crate::schema::patients::id)
        .first(conn)
        .optional()
}

/// The provider profile of an account, if it has one (a profile has its account's id).
pub fn provider_id(conn: &mut PgConnection, account_id: Uuid) -> QueryResult<Option<Uuid>> {
    crate::schema::providers::table
        .find(account_id)
        .select(crate::schema::providers::id)
        .first(conn)
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Ada.Lovelace@Example.ORG ").unwrap().as_str(),
            "ada.lovelace@example.org"
        );
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "ada@@example.org",
            "a da@example.org",
            "ada@example..org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn an_email_never_prints() {
        let email = Email::parse("ada@example.org").unwrap();
        assert!(!format!("{email:?}").contains("ada"));
    }
}
