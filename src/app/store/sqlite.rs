//! The embedded SQLite backend: one file in `data_dir`, WAL journal so readers never wait for
//! the writer, and `BEGIN IMMEDIATE` for writes.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::config::DatabaseConfig;

sql_store! {
    name: SqliteStore,
    db: sqlx::Sqlite,
    backend: "sqlite",
    now: "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    skip_locked: "",
    share_lock: "",
    begin_write: "BEGIN IMMEDIATE",
    migrate_lock: "",
    migrations: migrate::SQLITE,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url`, e.g. `sqlite://./data/quire.db`.
    pub async fn open(url: &str, cfg: &DatabaseConfig) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no committed transaction on a process crash, only possibly
            // the last ones on a power loss; FULL would fsync every commit.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(dir) = opts
            .get_filename()
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unsupported(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections())
            .acquire_timeout(cfg.connect_timeout().get())
            .connect_with(opts)
            .await?;
        Ok(SqliteStore {
            pool,
            persistent: true,
        })
    }
}
