//! A scratch database for a benchmark: on the server named by DATABASE_URL, or in an
//! embedded cluster of its own (durable, like production), dropped afterwards.

use carewire::db::embedded::{ClusterOptions, EmbeddedCluster};
use carewire::db::quote_ident;
use diesel::prelude::*;

pub struct ScratchDb {
    pub url: String,
    admin_url: String,
    name: String,
    _cluster: Option<EmbeddedCluster>,
    _dir: Option<tempfile::TempDir>,
}

fn with_param(url: &str, key: &str, value: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{key}={value}")
    } else {
        format!("{url} {key}='{value}'")
    }
}

impl ScratchDb {
    pub fn create(label: &str) -> anyhow::Result<ScratchDb> {
        let (base, cluster, dir) = match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            Some(url) => (url, None, None),
            None => {
                let dir = tempfile::Builder::new().prefix("cw-bench").tempdir_in("/tmp")?;
                let cluster = EmbeddedCluster::start(&dir.path().join("pg"), ClusterOptions::default())?;
                (cluster.database_url("postgres"), Some(cluster), Some(dir))
            }
        };
        let name = format!("cw_bench_{label}_{}", std::process::id());
        let admin_url = with_param(&base, "dbname", "postgres");
        let mut admin = PgConnection::establish(&admin_url)?;
        diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&name)
        ))
        .execute(&mut admin)?;
        diesel::sql_query(format!("CREATE DATABASE {}", quote_ident(&name))).execute(&mut admin)?;
        let url = with_param(&base, "dbname", &name);
        carewire::db::run_migrations(&mut PgConnection::establish(&url)?)?;
        Ok(ScratchDb {
            url,
            admin_url,
            name,
            _cluster: cluster,
            _dir: dir,
        })
    }

    pub fn connect(&self) -> anyhow::Result<PgConnection> {
        Ok(PgConnection::establish(&self.url)?)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.name)
            ))
            .execute(&mut admin);
        }
    }
}
