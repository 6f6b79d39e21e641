//! The PostgreSQL backend, shared by every instance of an HA deployment. Behind a transaction-mode
//! pooler (PgBouncer) set `database.pgbouncer = true`: server-side prepared statements do not
//! survive a change of server connection there, so the statement cache is turned off.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::app::config::DatabaseConfig;

sql_store! {
    name: PgStore,
    db: sqlx::Postgres,
    backend: "postgres",
    now: "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
    skip_locked: "FOR UPDATE SKIP LOCKED",
    share_lock: "FOR SHARE",
    begin_write: "BEGIN",
    // A transaction-level lock: it works through a transaction-mode pooler too.
    migrate_lock: "LOCK TABLE schema_migrations IN SHARE ROW EXCLUSIVE MODE",
    migrations: migrate::POSTGRES,
}

impl PgStore {
    /// Connects lazily: the pool opens connections on demand and re-opens them after a database
    /// restart, so an instance survives an outage without restarting.
    pub async fn open(url: &str, cfg: &DatabaseConfig, application_name: &str) -> Result<Self> {
        let mut opts = PgConnectOptions::from_str(url)?.application_name(application_name);
        if cfg.pgbouncer {
            opts = opts.statement_cache_capacity(0);
        }
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections())
            .min_connections(0)
            .acquire_timeout(cfg.connect_timeout().get())
            .connect_lazy_with(opts);
        Ok(PgStore {
            pool,
            persistent: !cfg.pgbouncer,
        })
    }
}
