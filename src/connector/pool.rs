//! A connection pool to one database source, created without connecting. Each connection
//! carries its source's statement timeout from the start (PostgreSQL as a startup option,
//! MySQL/MariaDB as session variables set once connected).

use std::time::Duration;

use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Executor};

use super::probe::{mysql_options, postgres_options};
use super::settings::{ServerSettings, Settings};
use super::table::QueryError;

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
    pub async fn close(self) {
        match self {
            Pool::Postgres(p) => p.close().await,
            Pool::Mysql(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }
}

/// A pool for a database source; `None` for kinds that have no pool (HTTP, CSV).
pub fn create(settings: &Settings) -> Result<Option<Pool>, QueryError> {
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
        Settings::Http(_) | Settings::Csv(_) | Settings::Agent(_) => return Ok(None),
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
