//! The one SQL implementation of the store traits, generic over the backend: one file per domain,
//! each statement written once against the database layer in `db.rs`, with the dialect's
//! fragments as placeholders (`{now}`, `{skip_locked}`, `{share_lock}`). Column lists and row
//! mappers are plain constants and functions beside the statements that use them.
//!
//! Guarantees every file keeps: writes that belong together share one [`db::Tx`]; claims lock
//! with `{skip_locked}`; a fenced write checks its lease with `cluster::fenced` inside its
//! transaction; times that decide who holds what come from `{now}`, the database clock.

mod agents;
mod bursts;
mod cluster;
mod datasources;
pub(crate) mod db;
mod dr;
mod jobs;
mod license;
mod outbox;
mod schedules;
mod templates;
mod users;

use async_trait::async_trait;

use self::db::{Backend, Db, Row as _, Sql};
use super::migrate::{self, MigrationError};
use super::{BaseStore, Result, StoreError};

/// Every store trait on one backend's pool (`SqliteStore`, `PgStore`).
pub(crate) struct SqlStore<B: Backend> {
    db: Db<B>,
}

impl<B: Backend> SqlStore<B> {
    /// A store on `pool`; `persistent` is false behind a transaction-mode pooler (see [`Db`]).
    pub(crate) fn new(pool: sqlx::Pool<B>, persistent: bool) -> SqlStore<B> {
        SqlStore {
            db: Db::new(pool, persistent),
        }
    }
}

fn already_exists(e: &sqlx::Error) -> bool {
    // unique_violation, duplicate_object, duplicate_table
    matches!(e, sqlx::Error::Database(d)
        if matches!(d.code().as_deref(), Some("23505" | "42710" | "42P07")))
}

/// A unique violation becomes a conflict naming the input `field` at fault.
fn conflict(e: StoreError, field: &'static str, what: impl FnOnce() -> String) -> StoreError {
    match &e {
        StoreError::Database(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            StoreError::Conflict {
                what: what(),
                field,
            }
        }
        _ => e,
    }
}

#[async_trait]
impl<B: Backend> BaseStore for SqlStore<B> {
    fn backend(&self) -> &'static str {
        B::DIALECT.name
    }

    async fn migrate(&self) -> Result<()> {
        // Instances starting together race to create the table; PostgreSQL's IF NOT EXISTS
        // is not atomic, so the loser sees "already exists" and simply goes on.
        for attempt in 0..3 {
            let created = self
                .db
                .execute_raw(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, \
                     name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                )
                .await;
            match created {
                Ok(()) => break,
                Err(e) if attempt < 2 && already_exists(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut tx = self.db.begin_write().await?;
        let lock = B::DIALECT.migrate_lock;
        if !lock.is_empty() {
            tx.execute_raw(lock).await?;
        }
        let applied: Vec<(i64, String)> = tx
            .query("SELECT version, checksum FROM schema_migrations")
            .fetch_all()
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
        for m in migrate::pending(B::DIALECT.migrations, &applied)? {
            tx.execute_raw(m.sql)
                .await
                .map_err(|source| MigrationError::Failed {
                    version: m.version,
                    name: m.name.to_owned(),
                    source,
                })?;
            static RECORD: Sql = Sql::new(&[
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) \
                 VALUES ($1, $2, $3, {now})",
            ]);
            tx.query(&RECORD)
                .bind(m.version)
                .bind(m.name)
                .bind(m.checksum())
                .execute()
                .await?;
            tracing::info!(version = m.version, name = m.name, "applied migration");
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.db.query("SELECT 1").execute().await?;
        Ok(())
    }

    async fn schema_version(&self) -> Result<i64> {
        let row = self
            .db
            .query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one()
            .await?;
        row.try_get(0)
    }

    fn expected_schema_version(&self) -> i64 {
        B::DIALECT.migrations.last().map_or(0, |m| m.version)
    }

    async fn close(&self) {
        self.db.close().await;
    }

    async fn flag(&self, key: &str) -> Result<Option<String>> {
        let row = self
            .db
            .query("SELECT value FROM flags WHERE key = $1")
            .bind(key)
            .fetch_optional()
            .await?;
        row.map(|r| r.try_get(0)).transpose()
    }

    async fn set_flag(&self, key: &str, value: &str) -> Result<()> {
        self.db
            .query(
                "INSERT INTO flags (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute()
            .await?;
        Ok(())
    }

    async fn init_flag(&self, key: &str, value: &str) -> Result<String> {
        self.db
            .query("INSERT INTO flags (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute()
            .await?;
        Ok(self.flag(key).await?.unwrap_or_else(|| value.to_owned()))
    }
}
