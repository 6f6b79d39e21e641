//! The PostgreSQL backend, shared by every instance of an HA deployment. Behind a transaction-mode
//! pooler (PgBouncer) set `database.pgbouncer = true`: server-side prepared statements do not
//! survive a change of server connection there, so the statement cache is turned off.

use std::future::Future;
use std::str::FromStr;

use futures_util::TryFutureExt;
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};

use super::sql::SqlStore;
use super::sql::db::{Backend, Col, Dialect, Param, Row, SqlxQuery, Value};
use super::{Result, migrate};
use crate::app::config::DatabaseConfig;

/// The store on PostgreSQL.
pub(crate) type PgStore = SqlStore<Postgres>;

impl Backend for Postgres {
    const DIALECT: Dialect = Dialect {
        name: "postgres",
        slot: 1,
        now: "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
        skip_locked: "FOR UPDATE SKIP LOCKED",
        share_lock: "FOR SHARE",
        begin_write: "BEGIN",
        // A transaction-level lock: it works through a transaction-mode pooler too.
        migrate_lock: "LOCK TABLE schema_migrations IN SHARE ROW EXCLUSIVE MODE",
        migrations: migrate::POSTGRES,
    };

    fn bind<'q>(q: SqlxQuery<Self>, value: impl Param<'q>) -> SqlxQuery<Self> {
        q.bind(value)
    }

    fn fetch_optional(
        conn: &mut PgConnection,
        q: SqlxQuery<Self>,
    ) -> impl Future<Output = sqlx::Result<Option<PgRow>>> + Send {
        q.fetch_optional(conn)
    }

    fn fetch_all(
        conn: &mut PgConnection,
        q: SqlxQuery<Self>,
    ) -> impl Future<Output = sqlx::Result<Vec<PgRow>>> + Send {
        q.fetch_all(conn)
    }

    fn execute(
        conn: &mut PgConnection,
        q: SqlxQuery<Self>,
    ) -> impl Future<Output = sqlx::Result<u64>> + Send {
        q.execute(conn).map_ok(|r| r.rows_affected())
    }

    fn execute_raw(
        conn: &mut PgConnection,
        sql: &'static str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send {
        sqlx::raw_sql(sql).execute(conn).map_ok(|_| ())
    }
}

impl Row for PgRow {
    fn try_get<T: Value, I: Col>(&self, col: I) -> Result<T> {
        Ok(sqlx::Row::try_get(self, col)?)
    }
}

impl SqlStore<Postgres> {
    /// Connects lazily: the pool opens connections on demand and re-opens them after a database
    /// restart, so an instance survives an outage without restarting.
    pub(crate) async fn open(
        url: &str,
        cfg: &DatabaseConfig,
        application_name: &str,
    ) -> Result<Self> {
        let mut opts = PgConnectOptions::from_str(url)?.application_name(application_name);
        if cfg.pgbouncer {
            opts = opts.statement_cache_capacity(0);
        }
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections())
            .min_connections(0)
            .acquire_timeout(cfg.connect_timeout().get())
            .connect_lazy_with(opts);
        Ok(SqlStore::new(pool, !cfg.pgbouncer))
    }
}
