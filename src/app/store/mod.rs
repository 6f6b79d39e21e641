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
mod postgres;
mod sqlite;

use async_trait::async_trait;

use super::model::*;
use crate::app::config::{AppConfig, DatabaseUrl};

pub use migrate::MigrationError;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("{what} already exists")]
    Conflict { what: String, field: &'static str },
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
    /// Jobs whose claim lease ran out (their instance stopped renewing), or whose instance has
    /// sent no heartbeat for `stale_ms`.
    Expired { stale_ms: i64 },
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
    /// Creates the first user as root, only while there are no users at all; false when there
    /// already were (another instance starting at the same moment created one).
    async fn create_first_root(&self, email: &str, password_hash: &str) -> Result<bool>;
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

    // --- the cluster: instances, leader leases, cache versions
    /// The database clock, in epoch milliseconds.
    async fn db_now(&self) -> Result<Millis>;
    /// Records (or refreshes) this process in the instance registry.
    async fn register_instance(&self, info: &InstanceInfo) -> Result<()>;
    /// Records a heartbeat; answers whether an admin asked this instance to drain, or `None`
    /// when the row is gone (forgotten) and the instance must register again.
    async fn heartbeat(&self, id: &str, draining: bool, nats: &str) -> Result<Option<bool>>;
    async fn instance_stopped(&self, id: &str) -> Result<()>;
    /// Every registered instance and the database clock the ages are measured against.
    async fn instances(&self) -> Result<(Millis, Vec<InstanceRow>)>;
    /// Deletes instances silent for `older_than_ms`.
    async fn forget_instances(&self, older_than_ms: i64) -> Result<u64>;
    /// Asks an instance to drain (or to resume); false when there is no such instance.
    async fn request_drain(&self, id: &str, drain: bool) -> Result<bool>;
    /// Takes `role` if it is free or expired: one statement, a new term.
    async fn acquire_lease(&self, role: &str, holder: &str, lease_ms: i64)
    -> Result<Option<Grant>>;
    /// Extends a lease still held under `term`: one statement.
    async fn renew_lease(
        &self,
        role: &str,
        holder: &str,
        term: i64,
        lease_ms: i64,
    ) -> Result<Option<Grant>>;
    /// Gives a role up at once so another instance can take it.
    async fn release_lease(&self, role: &str, holder: &str, term: i64) -> Result<bool>;
    async fn leases(&self) -> Result<Vec<Lease>>;
    /// The most recent changes of holder, newest first.
    async fn lease_history(&self, limit: i64) -> Result<Vec<Handover>>;
    async fn cache_version(&self, kind: &str) -> Result<i64>;
    async fn bump_cache(&self, kind: &str) -> Result<i64>;

    // --- schedules, occurrences, outbox
    async fn create_schedule(
        &self,
        spec: &ScheduleSpec,
        next_fire_at: Option<Millis>,
        by: Option<&str>,
    ) -> Result<Schedule>;
    async fn update_schedule(
        &self,
        id: &str,
        spec: &ScheduleSpec,
        next_fire_at: Option<Millis>,
    ) -> Result<Option<Schedule>>;
    async fn schedules(&self) -> Result<Vec<Schedule>>;
    /// By id or by name.
    async fn schedule(&self, id_or_name: &str) -> Result<Option<Schedule>>;
    async fn delete_schedule(&self, id: &str) -> Result<bool>;
    /// Enabled schedules whose next fire time has come, with the database clock.
    async fn due_schedules(&self, limit: i64) -> Result<(Millis, Vec<Schedule>)>;
    /// In one transaction, under the scheduler's fence: records the firings (occurrences and
    /// their render jobs) and moves the schedule to `new_next`. False, with nothing written, when
    /// the fence no longer holds or the schedule moved on meanwhile (another leader fired it).
    async fn fire_schedule(
        &self,
        schedule_id: &str,
        expected_next: Millis,
        firings: &[Firing],
        new_next: Option<Millis>,
        skipped: i64,
        fence: &Fence,
    ) -> Result<bool>;
    async fn occurrences(&self, schedule_id: &str, limit: i64) -> Result<Vec<Occurrence>>;
    async fn occurrence(&self, id: &str) -> Result<Option<Occurrence>>;
    /// Occurrences in `rendering` whose job has finished.
    async fn rendered_occurrences(&self, limit: i64) -> Result<Vec<Rendered>>;
    /// Moves a rendered occurrence on (to held, delivering with `mails`, or failed), under the
    /// scheduler's fence; false when it was moved already or the fence is gone.
    async fn settle_occurrence(
        &self,
        id: &str,
        state: OccurrenceState,
        mails: &[NewMail],
        error: Option<&str>,
        fence: &Fence,
    ) -> Result<bool>;
    /// Approves (queueing `mails`) or rejects a held occurrence; `None` when it is not held.
    async fn review_occurrence(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        mails: &[NewMail],
    ) -> Result<Option<Occurrence>>;
    /// Claims due queued mails for sending, under the mailer's fence.
    async fn claim_mails(&self, limit: i64, lease_ms: i64, fence: &Fence) -> Result<Vec<Mail>>;
    /// The server accepted the mail; recorded only while `holder`'s claim on it stands.
    async fn mail_sent(&self, id: &str, holder: &str, reply: &str) -> Result<()>;
    /// Sending failed: retry at `retry_at`, or give up when `None`; only under `holder`'s claim.
    async fn mail_failed(
        &self,
        id: &str,
        holder: &str,
        reply: &str,
        retry_at: Option<Millis>,
    ) -> Result<()>;
    /// Gives claimed mails that were not attempted back to the queue (drain, lost role).
    async fn release_mails(&self, ids: &[String], holder: &str) -> Result<()>;
    /// Mails left `sending` by a mailer that died: back to the queue. This is the crash window —
    /// the server may have accepted them — and why each mail has a stable Message-ID.
    async fn recover_mails(&self) -> Result<u64>;
    async fn mails_of(&self, occurrence_id: &str) -> Result<Vec<Mail>>;
    /// Mails in a state (all when `None`), newest first.
    async fn mails(&self, state: Option<MailState>, limit: i64) -> Result<Vec<Mail>>;
    /// Queues a sent or failed mail again.
    async fn resend_mail(&self, id: &str) -> Result<Option<Mail>>;

    // --- small persistent flags
    async fn flag(&self, key: &str) -> Result<Option<String>>;
    async fn set_flag(&self, key: &str, value: &str) -> Result<()>;
    /// Sets a flag unless it is set; answers the stored value, so racing instances all get the
    /// first writer's.
    async fn init_flag(&self, key: &str, value: &str) -> Result<String>;
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
