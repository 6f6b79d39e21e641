//! Connection pools to the database sources, created on first use and shared by every render on
//! this instance. Each connection carries its data source's statement timeout from the start. A pool belongs to one version of its data source (its `updated_at`): a changed
//! data source gets a new pool and the old one is closed, whether the change is learnt from a
//! bus hint or from the row itself, which every query reads first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Executor};

use super::model::DataSource;
use super::probe::{mysql_options, postgres_options};
use super::settings::{ServerSettings, Settings};
use super::table::QueryError;
use crate::app::model::Millis;

/// How long a query waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections are closed after this, so a quiet source holds none.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections a SQLite file gets.
const SQLITE_CONNECTIONS: u32 = 4;

/// A pool of one of the database kinds.
#[derive(Clone)]
pub enum Pool {
    Postgres(PgPool),
    Mysql(MySqlPool),
    Sqlite(SqlitePool),
}

impl Pool {
    async fn close(self) {
        match self {
            Pool::Postgres(p) => p.close().await,
            Pool::Mysql(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }
}

#[derive(Default)]
pub struct Pools {
    by_id: Mutex<HashMap<String, (Millis, Pool)>>,
}

impl Pools {
    /// The pool for this version of `ds`, created (without connecting) when there is none.
    /// `None` for kinds that have no pool.
    pub fn get(&self, ds: &DataSource, settings: &Settings) -> Result<Option<Pool>, QueryError> {
        let mut by_id = self.lock();
        if let Some((version, pool)) = by_id.get(&ds.id)
            && *version == ds.updated_at
        {
            return Ok(Some(pool.clone()));
        }
        let Some(pool) = create(settings)? else {
            return Ok(None);
        };
        if let Some((_, old)) = by_id.insert(ds.id.clone(), (ds.updated_at, pool.clone())) {
            tokio::spawn(old.close());
        }
        Ok(Some(pool))
    }

    /// Closes every pool (a data source changed somewhere); the next query opens a new one.
    pub fn clear(&self) {
        for (_, (_, pool)) in self.lock().drain() {
            tokio::spawn(pool.close());
        }
    }

    /// Closes the pool of one data source.
    pub fn forget(&self, id: &str) {
        if let Some((_, pool)) = self.lock().remove(id) {
            tokio::spawn(pool.close());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Millis, Pool)>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn create(settings: &Settings) -> Result<Option<Pool>, QueryError> {
    let unusable = |e: String| QueryError::Unreachable(e);
    Ok(Some(match settings {
        Settings::Postgres(s) => {
            let timeout = s.statement_timeout.get().as_millis().to_string();
            let options = postgres_options(s)
                .map_err(unusable)?
                .options([("statement_timeout", timeout)]);
            Pool::Postgres(sized(PgPoolOptions::new(), s).connect_lazy_with(options))
        }
        Settings::Mysql(s) => {
            let ms = s.statement_timeout.get().as_millis();
            let options = sized(MySqlPoolOptions::new(), s).after_connect(move |conn, _| {
                Box::pin(async move {
                    // MySQL and MariaDB name the statement timeout differently; each refuses
                    // the other's.
                    let _ = conn
                        .execute(AssertSqlSafe(format!(
                            "SET SESSION max_execution_time = {ms}"
                        )))
                        .await;
                    let _ = conn
                        .execute(AssertSqlSafe(format!(
                            "SET SESSION max_statement_time = {}",
                            ms as f64 / 1000.0
                        )))
                        .await;
                    Ok(())
                })
            });
            Pool::Mysql(options.connect_lazy_with(mysql_options(s).map_err(unusable)?))
        }
        Settings::Sqlite(s) => {
            let options = SqliteConnectOptions::new()
                .filename(&s.path)
                .read_only(true)
                .create_if_missing(false);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(SQLITE_CONNECTIONS)
                    .min_connections(0)
                    .idle_timeout(IDLE_TIMEOUT)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options),
            )
        }
        Settings::Http(_) | Settings::Csv(_) => return Ok(None),
    }))
}

/// The pool options every server source shares.
fn sized<DB: sqlx::Database>(options: PoolOptions<DB>, s: &ServerSettings) -> PoolOptions<DB> {
    options
        .max_connections(s.pool_size)
        .min_connections(0)
        .idle_timeout(IDLE_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
}
