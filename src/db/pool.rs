//! The connection pool's manager: diesel's, plus a cheaper liveness check.
//!
//! A connection killed under the pool (a PostgreSQL restart, a proxy or firewall
//! dropping it) must be replaced rather than fail a request, so connections are
//! checked before use. Pinging on every check-out costs a round trip per request (on
//! the audit benchmark, 18% of a small write transaction's rate); so, as HikariCP does, a connection that was handed
//! back healthy less than [`TRUSTED_IDLE`] ago is handed out again without a ping. A
//! connection whose work failed is always pinged before its next use.
//!
//! Every attempt to open a connection is reported to the circuit [`Breaker`].

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, ManageConnection};

use super::breaker::Breaker;

/// How long after being handed back healthy a connection is trusted without a ping.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// A pooled PostgreSQL connection and when it was last known to work.
pub struct PgConn {
    conn: PgConnection,
    /// `None`: ping before the next use.
    healthy_at: Option<Instant>,
}

impl PgConn {
    /// Its last work failed: ping it before handing it out again.
    pub fn distrust(&mut self) {
        self.healthy_at = None;
    }
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("healthy_at", &self.healthy_at)
            .finish_non_exhaustive()
    }
}

impl Deref for PgConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

/// Opens connections through diesel and checks them as described above.
#[derive(Debug)]
pub struct Manager {
    diesel: ConnectionManager<PgConnection>,
    breaker: Arc<Breaker>,
}

impl Manager {
    pub fn new(url: impl Into<String>, breaker: Arc<Breaker>) -> Manager {
        Manager {
            diesel: ConnectionManager::new(url),
            breaker,
        }
    }
}

impl ManageConnection for Manager {
    type Connection = PgConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PgConn, Self::Error> {
        let opened = self.diesel.connect();
        self.breaker.record(opened.is_ok());
        Ok(PgConn {
            conn: opened?,
            healthy_at: Some(Instant::now()),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), Self::Error> {
        if conn.healthy_at.is_some_and(|at| at.elapsed() < TRUSTED_IDLE) {
            return Ok(());
        }
        self.diesel.is_valid(&mut conn.conn)?;
        conn.healthy_at = Some(Instant::now());
        Ok(())
    }

    /// r2d2 calls this as each connection is handed back: the moment it was last
    /// seen working, unless its work failed.
    fn has_broken(&self, conn: &mut PgConn) -> bool {
        if conn.healthy_at.is_some() {
            conn.healthy_at = Some(Instant::now());
        }
        self.diesel.has_broken(&mut conn.conn)
    }
}
