//! The storage interface: everything Quire keeps (users, sessions, tokens, templates, jobs,
//! outputs, progress events) behind one trait, so the same app runs on its embedded SQLite or on
//! a shared PostgreSQL. Both backends are generated from one SQL implementation (`sql.rs`) that
//! differs only in a few dialect fragments; no sqlx `Any`.
//!
//! Every write that belongs together happens in one transaction: a job's state change and the
//! progress event describing it commit together, so an event stream never shows a state the job
//! row does not have.

mod migrate;
#[macro_use]
mod sql;
mod sqlite;

use async_trait::async_trait;

use super::model::*;
use crate::config::{Config, DatabaseUrl};

pub use migrate::MigrationError;
pub use sqlite::SqliteStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("the render queue is full ({0} jobs waiting)")]
    QueueFull(i64),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("unexpected value in column {0}")]
    Corrupt(&'static str),
    #[error(transparent)]
    Migration(#[from] MigrationError),
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
            other => StoreError::Database(other),
        }
    }
}

/// Which jobs `requeue_abandoned` takes back.
#[derive(Debug, Clone)]
pub enum Abandoned {
    /// Every running job: at the start of a single instance, none can be running anywhere.
    All,
    /// Jobs whose claim lease ran out (their instance stopped renewing).
    Expired,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;
    /// Cheap round trip for readiness.
    async fn ping(&self) -> Result<()>;
    /// The schema version applied.
    async fn schema_version(&self) -> Result<i64>;
    async fn close(&self);

    // --- users
    /// Creates the root user, or updates its email, password and role to match the config.
    async fn upsert_root(&self, email: &str, password_hash: &str) -> Result<User>;
    async fn root_user(&self) -> Result<Option<User>>;
    async fn create_user(&self, new: &NewUser) -> Result<User>;
    async fn user(&self, id: &str) -> Result<Option<User>>;
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    async fn users(&self) -> Result<Vec<User>>;
    async fn update_user(&self, id: &str, changes: &UserChanges) -> Result<Option<User>>;
    async fn delete_user(&self, id: &str) -> Result<bool>;

    // --- sessions and tokens
    async fn create_session(&self, session: &Session) -> Result<()>;
    /// The unexpired session with this token hash and its (enabled) user.
    async fn session(&self, token_hash: &str, now: Millis) -> Result<Option<(Session, User)>>;
    async fn delete_session(&self, token_hash: &str) -> Result<()>;
    async fn delete_user_sessions(&self, user_id: &str) -> Result<()>;
    async fn create_token(&self, token: &ApiToken, token_hash: &str) -> Result<()>;
    async fn tokens(&self, user_id: &str) -> Result<Vec<ApiToken>>;
    async fn delete_token(&self, user_id: &str, id: &str) -> Result<bool>;
    /// The unexpired token with this hash and its (enabled) user; records the use.
    async fn token_user(&self, token_hash: &str, now: Millis) -> Result<Option<(ApiToken, User)>>;

    // --- templates
    async fn create_template(
        &self,
        name: &str,
        description: &str,
        v: &NewVersion,
    ) -> Result<(Template, TemplateVersion)>;
    /// Saves a new immutable version; `None` when the template does not exist.
    async fn add_version(
        &self,
        template_id: &str,
        description: Option<&str>,
        v: &NewVersion,
    ) -> Result<Option<(Template, TemplateVersion)>>;
    async fn templates(&self) -> Result<Vec<Template>>;
    /// By id or by name.
    async fn template(&self, id_or_name: &str) -> Result<Option<Template>>;
    async fn versions(&self, template_id: &str) -> Result<Vec<TemplateVersion>>;
    async fn version(&self, template_id: &str, version: i64) -> Result<Option<TemplateVersion>>;
    async fn files(&self, template_id: &str, version: i64) -> Result<Vec<TemplateFile>>;
    async fn delete_template(&self, template_id: &str) -> Result<bool>;

    // --- jobs
    /// Queues a job (its first event included), refusing when `queue_limit` jobs already wait.
    async fn enqueue(&self, job: &NewJob, queue_limit: i64) -> Result<(Job, JobEvent)>;
    async fn job(&self, id: &str) -> Result<Option<Job>>;
    /// Newest first, without data and parameters.
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;
    async fn queue_depth(&self) -> Result<i64>;
    /// Takes the oldest queued job for `instance`, marking it running under `token` with a
    /// claim lease of `lease_ms` on the database clock.
    async fn claim(
        &self,
        instance: &str,
        token: &str,
        lease_ms: i64,
    ) -> Result<Option<(Job, JobEvent)>>;
    /// Extends the claim; false when it was lost (cancelled or taken back).
    async fn renew_claim(&self, job_id: &str, token: &str, lease_ms: i64) -> Result<bool>;
    /// Records progress under the claim; `None` when the claim was lost.
    async fn progress(&self, job_id: &str, token: &str, p: &Progress) -> Result<Option<JobEvent>>;
    /// Completes a claimed job; `None` (and no change) unless the claim still holds, so a
    /// duplicate completion is harmless.
    async fn finish(
        &self,
        job_id: &str,
        token: &str,
        outcome: &Outcome,
        retention_ms: i64,
    ) -> Result<Option<JobEvent>>;
    /// Hands a claimed job back to the queue untouched (shutdown), attempts unchanged.
    async fn release(&self, job_id: &str, token: &str, reason: &str) -> Result<Option<JobEvent>>;
    /// Puts abandoned running jobs back in the queue, counting an attempt; a job past
    /// `max_attempts` fails instead. Returns the events written.
    async fn requeue_abandoned(
        &self,
        scope: Abandoned,
        max_attempts: i64,
        retention_ms: i64,
    ) -> Result<Vec<JobEvent>>;
    /// Cancels a job that has not finished. `None` when there is no such job; the event is
    /// `None` when it had already finished.
    async fn cancel(
        &self,
        job_id: &str,
        retention_ms: i64,
    ) -> Result<Option<(Job, Option<JobEvent>)>>;
    async fn output(&self, job_id: &str) -> Result<Option<Vec<u8>>>;
    /// Deletes finished jobs (and their outputs and events) past their retention.
    async fn purge_expired(&self) -> Result<u64>;
    async fn events_after(&self, job_id: &str, after_seq: i64) -> Result<Vec<JobEvent>>;

    // --- small persistent flags
    async fn flag(&self, key: &str) -> Result<Option<String>>;
    async fn set_flag(&self, key: &str, value: &str) -> Result<()>;
}

/// Opens the configured database (creating a SQLite file and its directory when needed).
pub async fn open(config: &Config) -> Result<std::sync::Arc<dyn Store>> {
    match config.database_url() {
        DatabaseUrl::Sqlite(url) => Ok(std::sync::Arc::new(
            SqliteStore::open(&url, &config.database).await?,
        )),
        DatabaseUrl::Postgres(_) => Err(StoreError::Unsupported(
            "the PostgreSQL backend is not part of this build yet; use a sqlite:// URL".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
