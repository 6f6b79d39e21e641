//! The storage interface: everything Quire keeps behind one trait per domain, so the same app runs
//! on its embedded SQLite or on a shared PostgreSQL:
//! - [`UserStore`] (`users.rs`): users, sessions and API tokens;
//! - [`TemplateStore`] (`templates.rs`): templates and their immutable versions;
//! - [`JobStore`] (`jobs.rs`): render jobs, their progress events and outputs;
//! - [`ClusterStore`] (`cluster.rs`): the instance registry, leader leases, cache versions and the
//!   database clock;
//! - [`ScheduleStore`] (`schedules.rs`): schedules and their occurrences;
//! - [`OutboxStore`] (`outbox.rs`): mails waiting to be sent and their delivery;
//! - [`BurstStore`] (`bursts.rs`): the rows of bursting occurrences;
//! - [`DataSourceStore`] (`datasources.rs`): where reports fetch their data;
//! - [`AgentStore`] (`agents.rs`): agents, their tokens and connections;
//! - [`DrStore`] (`dr.rs`): replication, takeovers and the role history;
//! - [`LicenseStore`] (`license.rs`): licence seats and their history;
//! - [`BaseStore`] (here): the database itself (backend, migrations, readiness) and small flags.
//!
//! [`Store`] is their sum, so a caller that needs several domains keeps one `Arc<dyn Store>`; the
//! methods of every domain trait can be called on a `dyn Store` without importing the trait.
//!
//! Both backends share one SQL implementation (`sql/`, one file per domain) written against a
//! small database layer (`sql/db.rs`); the backends differ only in a few dialect fragments
//! (`sqlite.rs`, `postgres.rs`). No sqlx `Any`.
//!
//! Every write that belongs together happens in one transaction: a job's state change and the
//! progress event describing it commit together, so an event stream never shows a state the job
//! row does not have.

mod agents;
mod bursts;
mod cluster;
mod datasources;
mod dr;
mod jobs;
mod license;
mod migrate;
mod outbox;
mod postgres;
mod schedules;
mod sql;
mod sqlite;
mod templates;
mod users;

use async_trait::async_trait;

use crate::app::config::{AppConfig, DatabaseUrl};

pub use agents::AgentStore;
pub use bursts::BurstStore;
pub use cluster::ClusterStore;
pub use datasources::DataSourceStore;
pub use dr::DrStore;
pub use jobs::{Abandoned, JobStore};
pub use license::LicenseStore;
pub use migrate::MigrationError;
pub use outbox::OutboxStore;
pub(crate) use postgres::PgStore;
pub use schedules::ScheduleStore;
pub(crate) use sqlite::SqliteStore;
pub use templates::TemplateStore;
pub use users::UserStore;

/// What every store method answers.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store method failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached (pool timeout, I/O, TLS): worth retrying later.
    #[error("the database is unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// A unique value (an email, a name) is taken; `field` names the input at fault.
    #[error("{what} already exists")]
    Conflict { what: String, field: &'static str },
    /// `enqueue` refused: this many jobs already wait.
    #[error("the render queue is full ({0} jobs waiting)")]
    QueueFull(i64),
    /// Any other error the database reported.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// A stored value this version cannot read (an unknown state, malformed JSON).
    #[error("unexpected value in column {0}")]
    Corrupt(&'static str),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// The database cannot be used as configured (e.g. its file cannot be created).
    #[error("{0}")]
    Unsupported(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e),
            sqlx::Error::Database(d) if d.code().as_deref() == Some(READ_ONLY_SQLSTATE) => {
                // The database turned read-only under us (a primary demoted, a replica by
                // mistake): the role check runs now rather than at its next tick.
                read_only_seen().notify_waiters();
                StoreError::Database(sqlx::Error::Database(d))
            }
            other => StoreError::Database(other),
        }
    }
}

/// `read_only_sql_transaction`: a write refused by a database in recovery.
const READ_ONLY_SQLSTATE: &str = "25006";

/// Woken when a statement was refused because the database is read-only.
pub fn read_only_seen() -> &'static tokio::sync::Notify {
    static SEEN: tokio::sync::Notify = tokio::sync::Notify::const_new();
    &SEEN
}

/// The database itself: which backend, its schema and readiness, and small persistent flags
/// (deployment-wide values such as the mail settings, the fingerprint salt, whether the examples
/// were seeded).
#[async_trait]
pub trait BaseStore: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;
    /// Cheap round trip for readiness.
    async fn ping(&self) -> Result<()>;
    /// The schema version applied.
    async fn schema_version(&self) -> Result<i64>;
    /// The schema version this binary's migrations lead to.
    fn expected_schema_version(&self) -> i64;
    /// Closes the pool, waiting for connections in use to come back.
    async fn close(&self);

    /// The value of a flag, if it is set.
    async fn flag(&self, key: &str) -> Result<Option<String>>;
    /// Sets a flag, replacing its value.
    async fn set_flag(&self, key: &str, value: &str) -> Result<()>;
    /// Sets a flag unless it is set; answers the stored value, so racing instances all get the
    /// first writer's.
    async fn init_flag(&self, key: &str, value: &str) -> Result<String>;
}

/// Every domain of the store behind one handle; implemented for every type that implements them
/// all.
pub trait Store:
    BaseStore
    + UserStore
    + TemplateStore
    + JobStore
    + ClusterStore
    + ScheduleStore
    + OutboxStore
    + BurstStore
    + AgentStore
    + DrStore
    + LicenseStore
    + DataSourceStore
    + 'static
{
}

impl<T> Store for T where
    T: BaseStore
        + UserStore
        + TemplateStore
        + JobStore
        + ClusterStore
        + ScheduleStore
        + OutboxStore
        + BurstStore
        + AgentStore
        + DrStore
        + LicenseStore
        + DataSourceStore
        + 'static
{
}

/// Opens the configured database (creating a SQLite file and its directory when needed).
/// `application_name` shows up in PostgreSQL's `pg_stat_activity`.
pub async fn open(config: &AppConfig, application_name: &str) -> Result<std::sync::Arc<dyn Store>> {
    match config.database_url() {
        DatabaseUrl::Sqlite(url) => Ok(std::sync::Arc::new(
            SqliteStore::open(&url, &config.database).await?,
        )),
        DatabaseUrl::Postgres(url) => Ok(std::sync::Arc::new(
            PgStore::open(&url, &config.database, application_name).await?,
        )),
    }
}

#[cfg(test)]
mod tests;

/// The integration harness's throwaway PostgreSQL, shared with the store tests.
#[cfg(test)]
#[path = "../../../tests/support/postgres.rs"]
mod pg_server;
