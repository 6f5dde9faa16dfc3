//! The two database roles: an **owner** that runs the migrations and owns every table,
//! and a **runtime** role, the one `serve` connects as, that owns nothing.
//!
//! Whoever holds the runtime role's credentials can read and write the application
//! tables, and can *add* to the audit log, but cannot change or remove what is in it:
//! no UPDATE, DELETE, TRUNCATE, REFERENCES or TRIGGER on the audit tables, and, since
//! only an owner may `ALTER TABLE`, no way to switch their append-only triggers off.
//! The owner's credentials are needed only by `carewire migrate`.
//!
//! [`grant_runtime`] is the exact set of grants (the README lists them); it runs after
//! every migration, so tables added later are covered. [`standing`] is what `serve`
//! checks about its own role before it starts.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use super::quote_ident;

/// The tables the runtime role may only read and append to.
pub const AUDIT_TABLES: [&str; 3] = ["audit_events", "audit_chain", "audit_checkpoints"];

/// The role a connection runs as, and what it could do to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Standing {
    #[diesel(sql_type = Text)]
    pub role: String,
    #[diesel(sql_type = Bool)]
    pub superuser: bool,
    /// The role owns the audit tables, or is a member of their owner: it could alter
    /// them and disable their triggers.
    #[diesel(sql_type = Bool)]
    pub owns_audit: bool,
    /// The role holds UPDATE (on the table or a column), DELETE, TRUNCATE or TRIGGER
    /// on an audit table.
    #[diesel(sql_type = Bool)]
    pub may_rewrite_audit: bool,
    /// The role could make itself the owner or run code as it: CREATEROLE (before
    /// PostgreSQL 16 it can grant itself any role), or CREATE in the schema (a
    /// function a later migration runs as the owner).
    #[diesel(sql_type = Bool)]
    pub may_escalate: bool,
}

impl Standing {
    /// Whether this role could change or remove audit history.
    pub fn can_rewrite_audit(&self) -> bool {
        self.superuser || self.owns_audit || self.may_rewrite_audit || self.may_escalate
    }

    /// Why the role is too strong, for the refusal or the warning.
    pub fn reason(&self) -> &'static str {
        if self.superuser {
            "is a superuser"
        } else if self.owns_audit {
            "owns the audit tables (it could disable their append-only triggers)"
        } else if self.may_rewrite_audit {
            "may update, delete or truncate audit rows"
        } else {
            "could make itself the owner (CREATEROLE, or CREATE in the schema)"
        }
    }
}

/// What the current role could do to the audit log. Needs the migrated schema.
pub fn standing(conn: &mut PgConnection) -> QueryResult<Standing> {
    let tables = AUDIT_TABLES.map(|t| format!("'{t}'::regclass")).join(", ");
    diesel::sql_query(format!(
        "SELECT current_user::text AS role, \
                (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser, \
                bool_or(pg_has_role(current_user, c.relowner, 'MEMBER')) AS owns_audit, \
                bool_or(has_table_privilege(current_user, c.oid, 'UPDATE, DELETE, TRUNCATE, TRIGGER') \
                        OR has_any_column_privilege(current_user, c.oid, 'UPDATE')) AS may_rewrite_audit, \
                (SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user) \
                    OR has_schema_privilege(current_user, 'public', 'CREATE') AS may_escalate \
         FROM pg_class c WHERE c.oid IN ({tables})"
    ))
    .get_result(conn)
}

/// The role this connection runs as.
pub fn current_role(conn: &mut PgConnection) -> QueryResult<String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        role: String,
    }
    Ok(diesel::sql_query("SELECT current_user::text AS role")
        .get_result::<Row>(conn)?
        .role)
}

/// Grants `role` exactly what the server needs, on the owner's connection `owner`:
/// reading and writing the application tables and their sequences;
/// reading and inserting into the audit tables; reading the migration history. No
/// one but the owner may create objects in the schema. Idempotent.
pub fn grant_runtime(owner: &mut PgConnection, role: &str) -> QueryResult<()> {
    let role = quote_ident(role);
    let audit = AUDIT_TABLES.join(", ");
    owner.transaction(|owner| {
        // Instances starting together would otherwise change the same ACLs at once
        // ("tuple concurrently updated"): one at a time, under the migration lock.
        diesel::sql_query(format!("SELECT pg_advisory_xact_lock({})", super::MIGRATION_LOCK)).execute(owner)?;
        // CONNECT comes from PUBLIC, as PostgreSQL grants it by default. Creating in
        // the schema is PostgreSQL 15's default too; older servers let everyone, so
        // the schema's owner takes it back.
        owner.batch_execute(&format!(
            "DO $$ BEGIN \
                 IF pg_has_role(current_user, (SELECT nspowner FROM pg_namespace WHERE nspname = 'public'), 'USAGE') \
                 THEN REVOKE CREATE ON SCHEMA public FROM PUBLIC; END IF; \
             END $$; \
             GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; \
             REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {role}; \
             REVOKE UPDATE, DELETE ON {audit} FROM {role}; \
             REVOKE INSERT, UPDATE, DELETE ON __diesel_schema_migrations FROM {role}; \
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};"
        ))
    })
}
