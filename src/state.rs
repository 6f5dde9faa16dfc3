//! The state every handler shares. Cheap to clone (one `Arc`).

use std::ops::Deref;
use std::sync::Arc;

use diesel::pg::PgConnection;

use crate::auth::AuthService;
use crate::clock::Clock;
use crate::config::Settings;
use crate::crypto::Crypto;
use crate::db::Db;
use crate::error::Error;

#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// What lives for the whole life of the server.
#[derive(Debug)]
pub struct Shared {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub crypto: Crypto,
    pub auth: AuthService,
    /// What reminders and other timed work read as "now".
    pub clock: Arc<dyn Clock>,
}

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }

    /// Runs `work` on the blocking pool with a connection and the state (for the
    /// crypto module and settings). See [`Db::run`].
    pub async fn with_db<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&mut PgConnection, &AppState) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let state = self.clone();
        self.db.run(move |conn| work(conn, &state)).await
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
