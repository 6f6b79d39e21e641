//! The one SQL implementation of `Store`, instantiated per backend by `sql_store!`. SQL here is
//! portable (`$N` parameters, `ON CONFLICT`, `RETURNING`, integer booleans and times); the few
//! places where backends differ are passed in as dialect fragments:
//! - `now`: the database clock in milliseconds (leases and claims are timed by it, not by the
//!   clocks of the instances);
//! - `skip_locked`: the row-locking clause of the job claim (`FOR UPDATE SKIP LOCKED`);
//! - `share_lock`: keeps a checked lease row from changing hands until commit (`FOR SHARE`);
//! - `begin_write`: how a writing transaction starts (`BEGIN IMMEDIATE` on SQLite takes the write
//!   lock up front, so two writers never deadlock upgrading a read lock);
//! - `migrate_lock`: serializes instances migrating at the same time.

macro_rules! job_cols {
    () => {
        "id, template_id, template_name, template_version, data, parameters, state, stage, progress, \
         error, pages, output_size, created_by, created_at, started_at, finished_at, attempts, \
         claimed_by, claim_token"
    };
}

/// Job columns for listings: the (possibly large) data and parameters are left out.
macro_rules! job_summary_cols {
    () => {
        "id, template_id, template_name, template_version, '' AS data, '{}' AS parameters, state, \
         stage, progress, error, pages, output_size, created_by, created_at, started_at, \
         finished_at, attempts, claimed_by, claim_token"
    };
}

macro_rules! event_cols {
    () => {
        "job_id, seq, at, state, stage, progress, message, error, pages, output_size"
    };
}

macro_rules! user_cols {
    () => {
        "id, email, role, password_hash, is_root, disabled, created_at"
    };
}

macro_rules! token_cols {
    () => {
        "id, user_id, name, prefix, created_at, last_used_at, expires_at"
    };
}

macro_rules! version_cols {
    () => {
        "template_id, version, entry, parameters, sample_data, size, created_at, created_by"
    };
}

macro_rules! instance_cols {
    () => {
        "id, name, version, build, address, started_at, heartbeat_at, key_fingerprint, \
         license_fingerprint, schema_version, draining, drain_requested, nats, stopped_at"
    };
}

macro_rules! schedule_cols {
    () => {
        "id, name, template_id, template_name, cron, timezone, parameters, data, recipients, subject, body, \
         enabled, hold_for_review, jitter_ms, misfire, misfire_window_ms, next_fire_at, last_fire_at, \
         skipped_total, created_at, updated_at, created_by"
    };
}

macro_rules! occurrence_cols {
    () => {
        "id, schedule_id, fire_at, created_at, term, instance, job_id, state, error, reviewed_by, reviewed_at"
    };
}

macro_rules! mail_cols {
    () => {
        "id, occurrence_id, job_id, recipient, subject, body, attachment_name, message_id, state, attempts, \
         next_attempt_at, last_reply, sent_at, created_at"
    };
}

/// Holds only while the fence's lease does: a write guarded by it fails after a change of leader.
/// The row stays share-locked until the transaction ends (where the dialect locks rows), so the
/// lease cannot change hands between the check and the commit.
macro_rules! fence_check {
    ($now:literal, $share:literal) => {
        concat!("SELECT term FROM leases WHERE role = $1 AND holder = $2 AND term = $3 AND expires_at > ", $now, " ", $share)
    };
}

/// The state of an occurrence follows its mails: delivering while any is on its way, failed if
/// any failed for good, delivered when all are sent.
macro_rules! occurrence_follows_mails {
    () => {
        "UPDATE occurrences SET state = CASE \
           WHEN EXISTS (SELECT 1 FROM outbox WHERE occurrence_id = $1 AND state IN ('queued', 'sending')) THEN 'delivering' \
           WHEN EXISTS (SELECT 1 FROM outbox WHERE occurrence_id = $1 AND state = 'failed') THEN 'failed' \
           ELSE 'delivered' END \
         WHERE id = $1 AND state IN ('delivering', 'delivered', 'failed')"
    };
}

/// Appends the next event of a job; run after the statement that changed the job row (which
/// holds the row lock, so two writers cannot pick the same sequence number).
macro_rules! insert_event {
    ($now:literal) => {
        concat!(
            "INSERT INTO render_events (job_id, seq, at, state, stage, progress, message, error, pages, output_size) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, ",
            $now,
            ", $2, $3, $4, $5, $6, $7, $8 FROM render_events WHERE job_id = $1 RETURNING ",
            event_cols!()
        )
    };
}

macro_rules! sql_store {
    (
        name: $store:ident,
        db: $db:ty,
        backend: $backend:literal,
        now: $now:literal,
        skip_locked: $skip:literal,
        share_lock: $share:literal,
        begin_write: $begin:literal,
        migrate_lock: $lock:literal,
        migrations: $migrations:expr $(,)?
    ) => {
        use async_trait::async_trait;
        use sqlx::Row as _;

        use crate::app::model::*;
        use crate::app::store::migrate::{self, MigrationError};
        use crate::app::store::{Abandoned, Result, Store, StoreError};

        type DbRow = <$db as sqlx::Database>::Row;
        type Tx = sqlx::Transaction<'static, $db>;

        type Q = sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments>;

        /// A `Store` on this backend.
        pub struct $store {
            pool: sqlx::Pool<$db>,
            /// False behind a transaction-mode pooler: statements are then unnamed and every
            /// statement runs inside a transaction, so its parse and execute steps reach the same
            /// server connection.
            persistent: bool,
        }

        impl $store {
            fn query(&self, sql: &'static str) -> Q {
                sqlx::query(sql).persistent(self.persistent)
            }

            async fn opt(&self, q: Q) -> Result<Option<DbRow>> {
                if self.persistent {
                    return Ok(q.fetch_optional(&self.pool).await?);
                }
                let mut tx = self.pool.begin().await?;
                let r = q.fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                Ok(r)
            }

            async fn one(&self, q: Q) -> Result<DbRow> {
                if self.persistent {
                    return Ok(q.fetch_one(&self.pool).await?);
                }
                let mut tx = self.pool.begin().await?;
                let r = q.fetch_one(&mut *tx).await?;
                tx.commit().await?;
                Ok(r)
            }

            async fn all(&self, q: Q) -> Result<Vec<DbRow>> {
                if self.persistent {
                    return Ok(q.fetch_all(&self.pool).await?);
                }
                let mut tx = self.pool.begin().await?;
                let r = q.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                Ok(r)
            }

            async fn run(&self, q: Q) -> Result<<$db as sqlx::Database>::QueryResult> {
                if self.persistent {
                    return Ok(q.execute(&self.pool).await?);
                }
                let mut tx = self.pool.begin().await?;
                let r = q.execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(r)
            }

            async fn write_tx(&self) -> Result<Tx> {
                Ok(self.pool.begin_with($begin).await?)
            }

            async fn event(&self, tx: &mut Tx, job_id: &str, e: &EventFields<'_>) -> Result<JobEvent> {
                let row = self.query(insert_event!($now))
                    .bind(job_id)
                    .bind(e.state.as_str())
                    .bind(e.stage)
                    .bind(e.progress)
                    .bind(e.message)
                    .bind(e.error.map(error_json))
                    .bind(e.pages)
                    .bind(e.output_size)
                    .fetch_one(&mut **tx)
                    .await?;
                event_row(&row)
            }

            async fn insert_version(&self, tx: &mut Tx, template_id: &str, version: i64, v: &NewVersion) -> Result<TemplateVersion> {
                let size: i64 = v.files.iter().map(|f| f.content.len() as i64).sum();
                let params = serde_json::to_string(&v.parameters).map_err(|_| StoreError::Corrupt("parameters"))?;
                let row = self.query(concat!(
                    "INSERT INTO template_versions (", version_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, ",
                    $now, ", $7) RETURNING ", version_cols!()
                ))
                .bind(template_id)
                .bind(version)
                .bind(&v.entry)
                .bind(params)
                .bind(&v.sample_data)
                .bind(size)
                .bind(&v.created_by)
                .fetch_one(&mut **tx)
                .await?;
                for f in &v.files {
                    self.query("INSERT INTO template_files (template_id, version, path, content) VALUES ($1, $2, $3, $4)")
                        .bind(template_id)
                        .bind(version)
                        .bind(&f.path)
                        .bind(&f.content)
                        .execute(&mut **tx)
                        .await?;
                }
                version_row(&row)
            }

            /// Updates the occurrence of a mail row just changed (`row` holds its occurrence id).
            async fn follow_mails(&self, tx: &mut Tx, row: Option<DbRow>) -> Result<()> {
                let occ: Option<String> = match row {
                    Some(r) => r.try_get(0)?,
                    None => None,
                };
                if let Some(occ) = occ {
                    self.query(occurrence_follows_mails!()).bind(occ).execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Whether `fence` still holds, checked inside `tx`.
            async fn fenced(&self, tx: &mut Tx, fence: &Fence) -> Result<bool> {
                let row = self
                    .query(fence_check!($now, $share))
                    .bind(fence.role)
                    .bind(&fence.holder)
                    .bind(fence.term)
                    .fetch_optional(&mut **tx)
                    .await?;
                Ok(row.is_some())
            }

            async fn insert_mails(&self, tx: &mut Tx, mails: &[NewMail]) -> Result<()> {
                for m in mails {
                    self.query(concat!(
                        "INSERT INTO outbox (id, occurrence_id, job_id, recipient, subject, body, attachment_name, message_id, ",
                        "state, attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, ",
                        $now, ", ", $now, ", ", $now, ")"
                    ))
                    .bind(&m.id)
                    .bind(&m.occurrence_id)
                    .bind(&m.job_id)
                    .bind(&m.recipient)
                    .bind(&m.subject)
                    .bind(&m.body)
                    .bind(&m.attachment_name)
                    .bind(&m.message_id)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            async fn insert_job(&self, tx: &mut Tx, job: &NewJob) -> Result<Job> {
                let row = self
                    .query(concat!(
                        "INSERT INTO render_jobs (id, template_id, template_name, template_version, data, parameters, state, ",
                        "stage, progress, created_by, created_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, 'queued', 'queued', 0, $7, ",
                        $now, ", 0) RETURNING ", job_cols!()
                    ))
                    .bind(&job.id)
                    .bind(&job.template_id)
                    .bind(&job.template_name)
                    .bind(job.template_version)
                    .bind(&job.data)
                    .bind(&job.parameters)
                    .bind(&job.created_by)
                    .fetch_one(&mut **tx)
                    .await?;
                job_row(&row)
            }

            async fn fetch_user(&self, sql: &'static str, key: &str) -> Result<Option<User>> {
                let row = self.opt(self.query(sql).bind(key)).await?;
                row.as_ref().map(user_row).transpose()
            }
        }

        /// What an event records, borrowed from the caller.
        struct EventFields<'a> {
            state: JobState,
            stage: &'a str,
            progress: i64,
            message: Option<&'a str>,
            error: Option<&'a JobError>,
            pages: Option<i64>,
            output_size: Option<i64>,
        }

        impl<'a> EventFields<'a> {
            fn state(state: JobState, stage: &'a str, progress: i64, message: Option<&'a str>) -> Self {
                EventFields { state, stage, progress, message, error: None, pages: None, output_size: None }
            }
        }

        fn error_json(e: &JobError) -> String {
            serde_json::to_string(e).unwrap_or_default()
        }

        fn parse_error(s: Option<String>) -> Result<Option<JobError>> {
            s.map(|s| serde_json::from_str(&s).map_err(|_| StoreError::Corrupt("error"))).transpose()
        }

        fn user_row(r: &DbRow) -> Result<User> {
            let role: String = r.try_get("role")?;
            Ok(User {
                id: r.try_get("id")?,
                email: r.try_get("email")?,
                role: Role::parse(&role).ok_or(StoreError::Corrupt("users.role"))?,
                password_hash: r.try_get("password_hash")?,
                is_root: r.try_get::<i64, _>("is_root")? != 0,
                disabled: r.try_get::<i64, _>("disabled")? != 0,
                created_at: r.try_get("created_at")?,
            })
        }

        fn token_row(r: &DbRow) -> Result<ApiToken> {
            Ok(ApiToken {
                id: r.try_get("id")?,
                user_id: r.try_get("user_id")?,
                name: r.try_get("name")?,
                prefix: r.try_get("prefix")?,
                created_at: r.try_get("created_at")?,
                last_used_at: r.try_get("last_used_at")?,
                expires_at: r.try_get("expires_at")?,
            })
        }

        fn template_row(r: &DbRow) -> Result<Template> {
            Ok(Template {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                description: r.try_get("description")?,
                latest_version: r.try_get("latest_version")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        }

        fn version_row(r: &DbRow) -> Result<TemplateVersion> {
            let params: String = r.try_get("parameters")?;
            Ok(TemplateVersion {
                template_id: r.try_get("template_id")?,
                version: r.try_get("version")?,
                entry: r.try_get("entry")?,
                parameters: serde_json::from_str(&params).map_err(|_| StoreError::Corrupt("template_versions.parameters"))?,
                sample_data: r.try_get("sample_data")?,
                size: r.try_get("size")?,
                created_at: r.try_get("created_at")?,
                created_by: r.try_get("created_by")?,
            })
        }

        fn job_row(r: &DbRow) -> Result<Job> {
            let state: String = r.try_get("state")?;
            Ok(Job {
                id: r.try_get("id")?,
                template_id: r.try_get("template_id")?,
                template_name: r.try_get("template_name")?,
                template_version: r.try_get("template_version")?,
                data: r.try_get("data")?,
                parameters: r.try_get("parameters")?,
                state: JobState::parse(&state).ok_or(StoreError::Corrupt("render_jobs.state"))?,
                stage: r.try_get("stage")?,
                progress: r.try_get("progress")?,
                error: parse_error(r.try_get("error")?)?,
                pages: r.try_get("pages")?,
                output_size: r.try_get("output_size")?,
                created_by: r.try_get("created_by")?,
                created_at: r.try_get("created_at")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                attempts: r.try_get("attempts")?,
                claimed_by: r.try_get("claimed_by")?,
                claim_token: r.try_get("claim_token")?,
            })
        }

        fn event_row(r: &DbRow) -> Result<JobEvent> {
            let state: String = r.try_get("state")?;
            Ok(JobEvent {
                job_id: r.try_get("job_id")?,
                seq: r.try_get("seq")?,
                at: r.try_get("at")?,
                state: JobState::parse(&state).ok_or(StoreError::Corrupt("render_events.state"))?,
                stage: r.try_get("stage")?,
                progress: r.try_get("progress")?,
                message: r.try_get("message")?,
                error: parse_error(r.try_get("error")?)?,
                pages: r.try_get("pages")?,
                output_size: r.try_get("output_size")?,
            })
        }

        fn instance_row(r: &DbRow) -> Result<InstanceRow> {
            Ok(InstanceRow {
                info: InstanceInfo {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    build: r.try_get("build")?,
                    address: r.try_get("address")?,
                    started_at: r.try_get("started_at")?,
                    key_fingerprint: r.try_get("key_fingerprint")?,
                    license_fingerprint: r.try_get("license_fingerprint")?,
                    schema_version: r.try_get("schema_version")?,
                },
                heartbeat_at: r.try_get("heartbeat_at")?,
                draining: r.try_get::<i64, _>("draining")? != 0,
                drain_requested: r.try_get::<i64, _>("drain_requested")? != 0,
                nats: r.try_get("nats")?,
                stopped_at: r.try_get("stopped_at")?,
            })
        }

        fn schedule_row(r: &DbRow) -> Result<Schedule> {
            let recipients: String = r.try_get("recipients")?;
            let misfire: String = r.try_get("misfire")?;
            Ok(Schedule {
                id: r.try_get("id")?,
                spec: ScheduleSpec {
                    name: r.try_get("name")?,
                    template_id: r.try_get("template_id")?,
                    template_name: r.try_get("template_name")?,
                    cron: r.try_get("cron")?,
                    timezone: r.try_get("timezone")?,
                    parameters: r.try_get("parameters")?,
                    data: r.try_get("data")?,
                    recipients: serde_json::from_str(&recipients).map_err(|_| StoreError::Corrupt("schedules.recipients"))?,
                    subject: r.try_get("subject")?,
                    body: r.try_get("body")?,
                    enabled: r.try_get::<i64, _>("enabled")? != 0,
                    hold_for_review: r.try_get::<i64, _>("hold_for_review")? != 0,
                    jitter_ms: r.try_get("jitter_ms")?,
                    misfire: Misfire::parse(&misfire).ok_or(StoreError::Corrupt("schedules.misfire"))?,
                    misfire_window_ms: r.try_get("misfire_window_ms")?,
                },
                next_fire_at: r.try_get("next_fire_at")?,
                last_fire_at: r.try_get("last_fire_at")?,
                skipped_total: r.try_get("skipped_total")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
                created_by: r.try_get("created_by")?,
            })
        }

        fn occurrence_row(r: &DbRow) -> Result<Occurrence> {
            let state: String = r.try_get("state")?;
            Ok(Occurrence {
                id: r.try_get("id")?,
                schedule_id: r.try_get("schedule_id")?,
                fire_at: r.try_get("fire_at")?,
                created_at: r.try_get("created_at")?,
                term: r.try_get("term")?,
                instance: r.try_get("instance")?,
                job_id: r.try_get("job_id")?,
                state: OccurrenceState::parse(&state).ok_or(StoreError::Corrupt("occurrences.state"))?,
                error: r.try_get("error")?,
                reviewed_by: r.try_get("reviewed_by")?,
                reviewed_at: r.try_get("reviewed_at")?,
            })
        }

        fn mail_row(r: &DbRow) -> Result<Mail> {
            let state: String = r.try_get("state")?;
            Ok(Mail {
                id: r.try_get("id")?,
                occurrence_id: r.try_get("occurrence_id")?,
                job_id: r.try_get("job_id")?,
                recipient: r.try_get("recipient")?,
                subject: r.try_get("subject")?,
                body: r.try_get("body")?,
                attachment_name: r.try_get("attachment_name")?,
                message_id: r.try_get("message_id")?,
                state: MailState::parse(&state).ok_or(StoreError::Corrupt("outbox.state"))?,
                attempts: r.try_get("attempts")?,
                next_attempt_at: r.try_get("next_attempt_at")?,
                last_reply: r.try_get("last_reply")?,
                sent_at: r.try_get("sent_at")?,
                created_at: r.try_get("created_at")?,
            })
        }

        fn grant_row(r: &DbRow) -> Result<Grant> {
            Ok(Grant { term: r.try_get("term")?, expires_at: r.try_get("expires_at")? })
        }

        fn already_exists(e: &sqlx::Error) -> bool {
            // unique_violation, duplicate_object, duplicate_table
            matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("23505" | "42710" | "42P07")))
        }

        /// A unique violation becomes a conflict naming the input `field` at fault.
        fn conflict(e: StoreError, field: &'static str, what: impl FnOnce() -> String) -> StoreError {
            match &e {
                StoreError::Database(sqlx::Error::Database(d)) if d.is_unique_violation() => StoreError::Conflict { what: what(), field },
                _ => e,
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn migrate(&self) -> Result<()> {
                // Instances starting together race to create the table; PostgreSQL's IF NOT EXISTS
                // is not atomic, so the loser sees "already exists" and simply goes on.
                for attempt in 0..3 {
                    let created = sqlx::raw_sql(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
                         checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                    )
                    .execute(&self.pool)
                    .await;
                    match created {
                        Ok(_) => break,
                        Err(e) if attempt < 2 && already_exists(&e) => {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                let mut tx = self.write_tx().await?;
                if !$lock.is_empty() {
                    sqlx::raw_sql($lock).execute(&mut *tx).await?;
                }
                let applied: Vec<(i64, String)> = self.query("SELECT version, checksum FROM schema_migrations")
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<std::result::Result<_, sqlx::Error>>()?;
                for m in migrate::pending($migrations, &applied)? {
                    sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(|source| MigrationError::Failed {
                        version: m.version,
                        name: m.name.to_owned(),
                        source,
                    })?;
                    self.query(concat!(
                        "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, ",
                        $now, ")"
                    ))
                    .bind(m.version)
                    .bind(m.name)
                    .bind(m.checksum())
                    .execute(&mut *tx)
                    .await?;
                    tracing::info!(version = m.version, name = m.name, "applied migration");
                }
                tx.commit().await?;
                Ok(())
            }

            async fn ping(&self) -> Result<()> {
                self.run(self.query("SELECT 1")).await?;
                Ok(())
            }

            async fn schema_version(&self) -> Result<i64> {
                let row = self.one(self.query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                    )
                    .await?;
                Ok(row.try_get(0)?)
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            async fn upsert_root(&self, email: &str, password_hash: &str) -> Result<User> {
                let mut tx = self.write_tx().await?;
                // A root user renamed in the config leaves its old account as a plain admin.
                self.query("UPDATE users SET is_root = 0 WHERE is_root = 1 AND email <> $1")
                    .bind(email)
                    .execute(&mut *tx)
                    .await?;
                let row = self.query(concat!(
                    "INSERT INTO users (id, email, role, password_hash, is_root, disabled, created_at, updated_at) \
                     VALUES ($1, $2, 'admin', $3, 1, 0, ", $now, ", ", $now, ") \
                     ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash, role = 'admin', \
                     is_root = 1, disabled = 0, updated_at = excluded.updated_at RETURNING ", user_cols!()
                ))
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(email)
                .bind(password_hash)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                user_row(&row)
            }

            async fn create_first_root(&self, email: &str, password_hash: &str) -> Result<bool> {
                let row = self
                    .opt(self.query(concat!(
                        "INSERT INTO users (id, email, role, password_hash, is_root, disabled, created_at, updated_at) ",
                        "SELECT $1, $2, 'admin', $3, 1, 0, ", $now, ", ", $now, " WHERE NOT EXISTS (SELECT 1 FROM users) ",
                        "ON CONFLICT (email) DO NOTHING RETURNING id"
                    ))
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(email)
                    .bind(password_hash))
                    .await?;
                Ok(row.is_some())
            }

            async fn root_user(&self) -> Result<Option<User>> {
                let row = self.opt(self.query(concat!("SELECT ", user_cols!(), " FROM users WHERE is_root = 1"))
                    )
                    .await?;
                row.as_ref().map(user_row).transpose()
            }

            async fn create_user(&self, new: &NewUser) -> Result<User> {
                let row = self.one(self.query(concat!(
                    "INSERT INTO users (id, email, role, password_hash, is_root, disabled, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, 0, 0, ", $now, ", ", $now, ") RETURNING ", user_cols!()
                ))
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&new.email)
                .bind(new.role.as_str())
                .bind(&new.password_hash)
                )
                .await
                .map_err(|e| conflict(e, "email", || format!("a user with email {}", new.email)))?;
                user_row(&row)
            }

            async fn user(&self, id: &str) -> Result<Option<User>> {
                self.fetch_user(concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1"), id).await
            }

            async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
                self.fetch_user(concat!("SELECT ", user_cols!(), " FROM users WHERE email = $1"), email).await
            }

            async fn users(&self) -> Result<Vec<User>> {
                let rows = self.all(self.query(concat!("SELECT ", user_cols!(), " FROM users ORDER BY email"))
                    )
                    .await?;
                rows.iter().map(user_row).collect()
            }

            async fn update_user(&self, id: &str, c: &UserChanges) -> Result<Option<User>> {
                let row = self.opt(self.query(concat!(
                    "UPDATE users SET role = COALESCE($2, role), password_hash = COALESCE($3, password_hash), \
                     disabled = COALESCE($4, disabled), updated_at = ", $now, " WHERE id = $1 RETURNING ", user_cols!()
                ))
                .bind(id)
                .bind(c.role.map(Role::as_str))
                .bind(&c.password_hash)
                .bind(c.disabled.map(i64::from))
                )
                .await?;
                row.as_ref().map(user_row).transpose()
            }

            async fn delete_user(&self, id: &str) -> Result<bool> {
                let r = self.run(self.query("DELETE FROM users WHERE id = $1 AND is_root = 0").bind(id)).await?;
                Ok(r.rows_affected() > 0)
            }

            async fn create_session(&self, s: &Session) -> Result<()> {
                self.run(self.query(
                    "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&s.token_hash)
                .bind(&s.user_id)
                .bind(&s.csrf_token)
                .bind(s.created_at)
                .bind(s.expires_at)
                )
                .await?;
                Ok(())
            }

            async fn session(&self, token_hash: &str, now: Millis) -> Result<Option<(Session, User)>> {
                let row = self.opt(self.query(concat!(
                    "SELECT s.token_hash, s.csrf_token, s.created_at AS s_created_at, s.expires_at AS s_expires_at, ",
                    "u.id, u.email, u.role, u.password_hash, u.is_root, u.disabled, u.created_at ",
                    "FROM sessions s JOIN users u ON u.id = s.user_id ",
                    "WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled = 0"
                ))
                .bind(token_hash)
                .bind(now)
                )
                .await?;
                let Some(r) = row else { return Ok(None) };
                let user = user_row(&r)?;
                let session = Session {
                    token_hash: r.try_get("token_hash")?,
                    user_id: user.id.clone(),
                    csrf_token: r.try_get("csrf_token")?,
                    created_at: r.try_get("s_created_at")?,
                    expires_at: r.try_get("s_expires_at")?,
                };
                Ok(Some((session, user)))
            }

            async fn delete_session(&self, token_hash: &str) -> Result<()> {
                self.run(self.query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash)).await?;
                Ok(())
            }

            async fn delete_user_sessions(&self, user_id: &str) -> Result<()> {
                self.run(self.query("DELETE FROM sessions WHERE user_id = $1").bind(user_id)).await?;
                Ok(())
            }

            async fn create_token(&self, t: &ApiToken, token_hash: &str) -> Result<()> {
                self.run(self.query(
                    "INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, created_at, last_used_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)",
                )
                .bind(&t.id)
                .bind(&t.user_id)
                .bind(&t.name)
                .bind(token_hash)
                .bind(&t.prefix)
                .bind(t.created_at)
                .bind(t.expires_at)
                )
                .await?;
                Ok(())
            }

            async fn tokens(&self, user_id: &str) -> Result<Vec<ApiToken>> {
                let rows = self.all(self.query(concat!(
                    "SELECT ", token_cols!(), " FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC"
                ))
                .bind(user_id)
                )
                .await?;
                rows.iter().map(token_row).collect()
            }

            async fn delete_token(&self, user_id: &str, id: &str) -> Result<bool> {
                let r = self.run(self.query("DELETE FROM api_tokens WHERE user_id = $1 AND id = $2")
                    .bind(user_id)
                    .bind(id)
                    )
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn token_user(&self, token_hash: &str, now: Millis) -> Result<Option<(ApiToken, User)>> {
                let row = self.opt(self.query(concat!(
                    "SELECT t.id AS t_id, t.name, t.prefix, t.created_at AS t_created_at, t.last_used_at, t.expires_at, ",
                    "u.id, u.email, u.role, u.password_hash, u.is_root, u.disabled, u.created_at ",
                    "FROM api_tokens t JOIN users u ON u.id = t.user_id ",
                    "WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) AND u.disabled = 0"
                ))
                .bind(token_hash)
                .bind(now)
                )
                .await?;
                let Some(r) = row else { return Ok(None) };
                let user = user_row(&r)?;
                let token = ApiToken {
                    id: r.try_get("t_id")?,
                    user_id: user.id.clone(),
                    name: r.try_get("name")?,
                    prefix: r.try_get("prefix")?,
                    created_at: r.try_get("t_created_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                    expires_at: r.try_get("expires_at")?,
                };
                // Record use at most once a minute: a write per API call would be most of the
                // database's work under load.
                if token.last_used_at.is_none_or(|t| t < now - 60_000) {
                    self.run(self.query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                        .bind(&token.id)
                        .bind(now)
                        )
                        .await?;
                }
                Ok(Some((token, user)))
            }

            async fn create_template(&self, name: &str, description: &str, v: &NewVersion) -> Result<(Template, TemplateVersion)> {
                let mut tx = self.write_tx().await?;
                let row = self.query(concat!(
                    "INSERT INTO templates (id, name, description, latest_version, created_at, updated_at) VALUES ($1, $2, $3, 1, ",
                    $now, ", ", $now, ") RETURNING id, name, description, latest_version, created_at, updated_at"
                ))
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(name)
                .bind(description)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| conflict(e.into(), "name", || format!("a template named {name}")))?;
                let template = template_row(&row)?;
                let version = self.insert_version(&mut tx, &template.id, 1, v).await?;
                tx.commit().await?;
                Ok((template, version))
            }

            async fn add_version(
                &self,
                template_id: &str,
                description: Option<&str>,
                v: &NewVersion,
            ) -> Result<Option<(Template, TemplateVersion)>> {
                let mut tx = self.write_tx().await?;
                let row = self.query(concat!(
                    "UPDATE templates SET latest_version = latest_version + 1, description = COALESCE($2, description), ",
                    "updated_at = ", $now, " WHERE id = $1 RETURNING id, name, description, latest_version, created_at, updated_at"
                ))
                .bind(template_id)
                .bind(description)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let template = template_row(&row)?;
                let version = self.insert_version(&mut tx, &template.id, template.latest_version, v).await?;
                tx.commit().await?;
                Ok(Some((template, version)))
            }

            async fn templates(&self) -> Result<Vec<Template>> {
                let rows = self.all(self.query(
                    "SELECT id, name, description, latest_version, created_at, updated_at FROM templates ORDER BY name",
                )
                )
                .await?;
                rows.iter().map(template_row).collect()
            }

            async fn template(&self, id_or_name: &str) -> Result<Option<Template>> {
                let row = self.opt(self.query(
                    "SELECT id, name, description, latest_version, created_at, updated_at FROM templates WHERE id = $1 OR name = $1",
                )
                .bind(id_or_name)
                )
                .await?;
                row.as_ref().map(template_row).transpose()
            }

            async fn versions(&self, template_id: &str) -> Result<Vec<TemplateVersion>> {
                let rows = self.all(self.query(concat!(
                    "SELECT ", version_cols!(), " FROM template_versions WHERE template_id = $1 ORDER BY version DESC"
                ))
                .bind(template_id)
                )
                .await?;
                rows.iter().map(version_row).collect()
            }

            async fn version(&self, template_id: &str, version: i64) -> Result<Option<TemplateVersion>> {
                let row = self.opt(self.query(concat!(
                    "SELECT ", version_cols!(), " FROM template_versions WHERE template_id = $1 AND version = $2"
                ))
                .bind(template_id)
                .bind(version)
                )
                .await?;
                row.as_ref().map(version_row).transpose()
            }

            async fn files(&self, template_id: &str, version: i64) -> Result<Vec<TemplateFile>> {
                let rows = self.all(self.query(
                    "SELECT path, content FROM template_files WHERE template_id = $1 AND version = $2 ORDER BY path",
                )
                .bind(template_id)
                .bind(version)
                )
                .await?;
                rows.iter()
                    .map(|r| Ok(TemplateFile { path: r.try_get("path")?, content: r.try_get("content")? }))
                    .collect()
            }

            async fn delete_template(&self, template_id: &str) -> Result<bool> {
                let r = self.run(self.query("DELETE FROM templates WHERE id = $1").bind(template_id)).await?;
                Ok(r.rows_affected() > 0)
            }

            async fn enqueue(&self, job: &NewJob, queue_limit: i64) -> Result<(Job, JobEvent)> {
                let mut tx = self.write_tx().await?;
                let depth: i64 = self.query("SELECT COUNT(*) FROM render_jobs WHERE state = 'queued'")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                if depth >= queue_limit {
                    return Err(StoreError::QueueFull(depth));
                }
                let job = self.insert_job(&mut tx, job).await?;
                let event = self.event(&mut tx, &job.id, &EventFields::state(JobState::Queued, "queued", 0, None)).await?;
                tx.commit().await?;
                Ok((job, event))
            }

            async fn job(&self, id: &str) -> Result<Option<Job>> {
                let row = self.opt(self.query(concat!("SELECT ", job_cols!(), " FROM render_jobs WHERE id = $1"))
                    .bind(id)
                    )
                    .await?;
                row.as_ref().map(job_row).transpose()
            }

            async fn jobs(&self, f: &JobFilter) -> Result<Vec<Job>> {
                let rows = self.all(self.query(concat!(
                    "SELECT ", job_summary_cols!(), " FROM render_jobs WHERE ($1 IS NULL OR created_by = $1) ",
                    "AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR template_id = $3) AND ($4 IS NULL OR created_at < $4) ",
                    "ORDER BY created_at DESC, id DESC LIMIT $5"
                ))
                .bind(&f.created_by)
                .bind(f.state.map(JobState::as_str))
                .bind(&f.template_id)
                .bind(f.before)
                .bind(f.limit)
                )
                .await?;
                rows.iter().map(job_row).collect()
            }

            async fn queue_depth(&self) -> Result<i64> {
                let row = self.one(self.query("SELECT COUNT(*) FROM render_jobs WHERE state = 'queued'")).await?;
                Ok(row.try_get(0)?)
            }

            async fn claim(&self, instance: &str, token: &str, lease_ms: i64) -> Result<Option<(Job, JobEvent)>> {
                let mut tx = self.write_tx().await?;
                let row = self.query(concat!(
                    "UPDATE render_jobs SET state = 'running', stage = 'starting', progress = 5, claimed_by = $1, ",
                    "claim_token = $2, claim_expires_at = ", $now, " + $3, started_at = ", $now, " ",
                    "WHERE id = (SELECT id FROM render_jobs WHERE state = 'queued' ORDER BY created_at, id LIMIT 1 ",
                    $skip, ") AND state = 'queued' RETURNING ", job_cols!()
                ))
                .bind(instance)
                .bind(token)
                .bind(lease_ms)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let job = job_row(&row)?;
                let event = self.event(&mut tx, &job.id, &EventFields::state(JobState::Running, "starting", 5, None)).await?;
                tx.commit().await?;
                Ok(Some((job, event)))
            }

            async fn renew_claim(&self, job_id: &str, token: &str, lease_ms: i64) -> Result<bool> {
                let r = self.run(self.query(concat!(
                    "UPDATE render_jobs SET claim_expires_at = ", $now, " + $3 ",
                    "WHERE id = $1 AND claim_token = $2 AND state = 'running'"
                ))
                .bind(job_id)
                .bind(token)
                .bind(lease_ms)
                )
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn progress(&self, job_id: &str, token: &str, p: &Progress) -> Result<Option<JobEvent>> {
                let mut tx = self.write_tx().await?;
                let r = self.query(
                    "UPDATE render_jobs SET stage = $3, progress = $4, pages = COALESCE($5, pages) \
                     WHERE id = $1 AND claim_token = $2 AND state = 'running'",
                )
                .bind(job_id)
                .bind(token)
                .bind(&p.stage)
                .bind(p.progress)
                .bind(p.pages)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() != 1 {
                    return Ok(None);
                }
                let fields = EventFields {
                    state: JobState::Running,
                    stage: &p.stage,
                    progress: p.progress,
                    message: p.message.as_deref(),
                    error: None,
                    pages: p.pages,
                    output_size: None,
                };
                let event = self.event(&mut tx, job_id, &fields).await?;
                tx.commit().await?;
                Ok(Some(event))
            }

            async fn finish(&self, job_id: &str, token: &str, outcome: &Outcome, retention_ms: i64) -> Result<Option<JobEvent>> {
                let mut tx = self.write_tx().await?;
                let (state, stage, error, pages, size) = match outcome {
                    Outcome::Succeeded { pdf, pages } => (JobState::Succeeded, "done", None, Some(*pages), Some(pdf.len() as i64)),
                    Outcome::Failed(e) => (JobState::Failed, "failed", Some(e), None, None),
                };
                let r = self.query(concat!(
                    "UPDATE render_jobs SET state = $3, stage = $4, progress = 100, error = $5, pages = COALESCE($6, pages), ",
                    "output_size = $7, finished_at = ", $now, ", expires_at = ", $now, " + $8, claim_token = NULL, ",
                    "claim_expires_at = NULL WHERE id = $1 AND claim_token = $2 AND state = 'running'"
                ))
                .bind(job_id)
                .bind(token)
                .bind(state.as_str())
                .bind(stage)
                .bind(error.map(error_json))
                .bind(pages)
                .bind(size)
                .bind(retention_ms)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() != 1 {
                    return Ok(None);
                }
                if let Outcome::Succeeded { pdf, .. } = outcome {
                    self.query(
                        "INSERT INTO render_outputs (job_id, pdf) VALUES ($1, $2) ON CONFLICT (job_id) DO UPDATE SET pdf = excluded.pdf",
                    )
                    .bind(job_id)
                    .bind(pdf)
                    .execute(&mut *tx)
                    .await?;
                }
                let message = error.map(|e| e.message.as_str());
                let fields = EventFields { state, stage, progress: 100, message, error, pages, output_size: size };
                let event = self.event(&mut tx, job_id, &fields).await?;
                tx.commit().await?;
                Ok(Some(event))
            }

            async fn release(&self, job_id: &str, token: &str, reason: &str) -> Result<Option<JobEvent>> {
                let mut tx = self.write_tx().await?;
                let r = self.query(
                    "UPDATE render_jobs SET state = 'queued', stage = 'queued', progress = 0, claimed_by = NULL, \
                     claim_token = NULL, claim_expires_at = NULL WHERE id = $1 AND claim_token = $2 AND state = 'running'",
                )
                .bind(job_id)
                .bind(token)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() != 1 {
                    return Ok(None);
                }
                let event = self.event(&mut tx, job_id, &EventFields::state(JobState::Queued, "queued", 0, Some(reason))).await?;
                tx.commit().await?;
                Ok(Some(event))
            }

            async fn requeue_abandoned(&self, scope: Abandoned, max_attempts: i64, retention_ms: i64) -> Result<Vec<JobEvent>> {
                let mut tx = self.write_tx().await?;
                let rows = match scope {
                    Abandoned::All => {
                        self.query(concat!("SELECT id, attempts, claimed_by FROM render_jobs WHERE state = 'running' ", $skip))
                            .fetch_all(&mut *tx)
                            .await?
                    }
                    Abandoned::Expired { stale_ms } => {
                        self.query(concat!(
                            "SELECT id, attempts, claimed_by FROM render_jobs WHERE state = 'running' AND (claim_expires_at < ",
                            $now, " OR claimed_by IN (SELECT id FROM instances WHERE heartbeat_at < ", $now, " - $1)) ", $skip
                        ))
                        .bind(stale_ms)
                        .fetch_all(&mut *tx)
                        .await?
                    }
                };
                let mut events = Vec::with_capacity(rows.len());
                for r in rows {
                    let id: String = r.try_get("id")?;
                    let attempts: i64 = r.try_get::<i64, _>("attempts")? + 1;
                    let holder: Option<String> = r.try_get("claimed_by")?;
                    let holder = holder.unwrap_or_else(|| "an instance".into());
                    if attempts >= max_attempts {
                        let err = JobError {
                            kind: "attempts".into(),
                            message: format!(
                                "gave up after {attempts} attempts: the instance running it stopped each time (last: {holder})"
                            ),
                            diagnostics: Vec::new(),
                        };
                        self.query(concat!(
                            "UPDATE render_jobs SET state = 'failed', stage = 'failed', progress = 100, attempts = $2, error = $3, ",
                            "finished_at = ", $now, ", expires_at = ", $now, " + $4, claim_token = NULL, claim_expires_at = NULL ",
                            "WHERE id = $1"
                        ))
                        .bind(&id)
                        .bind(attempts)
                        .bind(error_json(&err))
                        .bind(retention_ms)
                        .execute(&mut *tx)
                        .await?;
                        let fields = EventFields {
                            error: Some(&err),
                            ..EventFields::state(JobState::Failed, "failed", 100, Some(&err.message))
                        };
                        events.push(self.event(&mut tx, &id, &fields).await?);
                    } else {
                        self.query(
                            "UPDATE render_jobs SET state = 'queued', stage = 'queued', progress = 0, attempts = $2, \
                             claimed_by = NULL, claim_token = NULL, claim_expires_at = NULL WHERE id = $1",
                        )
                        .bind(&id)
                        .bind(attempts)
                        .execute(&mut *tx)
                        .await?;
                        let msg = format!("back in the queue: {holder} stopped while running it");
                        events.push(self.event(&mut tx, &id, &EventFields::state(JobState::Queued, "queued", 0, Some(&msg))).await?);
                    }
                }
                tx.commit().await?;
                Ok(events)
            }

            async fn cancel(&self, job_id: &str, retention_ms: i64) -> Result<Option<(Job, Option<JobEvent>)>> {
                let mut tx = self.write_tx().await?;
                let row = self.query(concat!(
                    "UPDATE render_jobs SET state = 'cancelled', stage = 'cancelled', finished_at = ", $now, ", ",
                    "expires_at = ", $now, " + $2, claim_token = NULL, claim_expires_at = NULL ",
                    "WHERE id = $1 AND state IN ('queued', 'running') RETURNING ", job_cols!()
                ))
                .bind(job_id)
                .bind(retention_ms)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    drop(tx);
                    return Ok(self.job(job_id).await?.map(|j| (j, None)));
                };
                let job = job_row(&row)?;
                let fields = EventFields::state(JobState::Cancelled, "cancelled", job.progress, Some("cancelled"));
                let event = self.event(&mut tx, job_id, &fields).await?;
                tx.commit().await?;
                Ok(Some((job, Some(event))))
            }

            async fn output(&self, job_id: &str) -> Result<Option<Vec<u8>>> {
                let row = self.opt(self.query("SELECT pdf FROM render_outputs WHERE job_id = $1")
                    .bind(job_id)
                    )
                    .await?;
                Ok(row.map(|r| r.try_get(0)).transpose()?)
            }

            async fn purge_expired(&self) -> Result<u64> {
                let r = self.run(self.query(concat!("DELETE FROM render_jobs WHERE expires_at IS NOT NULL AND expires_at < ", $now))
                    )
                    .await?;
                self.run(self.query(concat!("DELETE FROM sessions WHERE expires_at < ", $now))).await?;
                Ok(r.rows_affected())
            }

            async fn events_after(&self, job_id: &str, after_seq: i64) -> Result<Vec<JobEvent>> {
                let rows = self.all(self.query(concat!(
                    "SELECT ", event_cols!(), " FROM render_events WHERE job_id = $1 AND seq > $2 ORDER BY seq"
                ))
                .bind(job_id)
                .bind(after_seq)
                )
                .await?;
                rows.iter().map(event_row).collect()
            }

            async fn db_now(&self) -> Result<Millis> {
                let row = self.one(self.query(concat!("SELECT ", $now))).await?;
                Ok(row.try_get(0)?)
            }

            async fn register_instance(&self, i: &InstanceInfo) -> Result<()> {
                self.run(self.query(concat!(
                    "INSERT INTO instances (id, name, version, build, address, started_at, heartbeat_at, key_fingerprint, ",
                    "license_fingerprint, schema_version) VALUES ($1, $2, $3, $4, $5, $6, ", $now, ", $7, $8, $9) ",
                    "ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, address = excluded.address, ",
                    "schema_version = excluded.schema_version, stopped_at = NULL"
                ))
                .bind(&i.id)
                .bind(&i.name)
                .bind(&i.version)
                .bind(&i.build)
                .bind(&i.address)
                .bind(i.started_at)
                .bind(&i.key_fingerprint)
                .bind(&i.license_fingerprint)
                .bind(i.schema_version)
                )
                .await?;
                Ok(())
            }

            async fn heartbeat(&self, id: &str, draining: bool, nats: &str) -> Result<Option<bool>> {
                let row = self.opt(self.query(concat!(
                    "UPDATE instances SET heartbeat_at = ", $now, ", draining = $2, nats = $3 WHERE id = $1 RETURNING drain_requested"
                ))
                .bind(id)
                .bind(i64::from(draining))
                .bind(nats)
                )
                .await?;
                Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.map(|d| d != 0))
            }

            async fn instance_stopped(&self, id: &str) -> Result<()> {
                self.run(self.query(concat!("UPDATE instances SET stopped_at = ", $now, " WHERE id = $1"))
                    .bind(id)
                    )
                    .await?;
                Ok(())
            }

            async fn instances(&self) -> Result<(Millis, Vec<InstanceRow>)> {
                let now = self.db_now().await?;
                let rows = self.all(self.query(concat!("SELECT ", instance_cols!(), " FROM instances ORDER BY started_at, id"))
                    )
                    .await?;
                Ok((now, rows.iter().map(instance_row).collect::<Result<_>>()?))
            }

            async fn forget_instances(&self, older_than_ms: i64) -> Result<u64> {
                let r = self.run(self.query(concat!("DELETE FROM instances WHERE heartbeat_at < ", $now, " - $1"))
                    .bind(older_than_ms)
                    )
                    .await?;
                Ok(r.rows_affected())
            }

            async fn request_drain(&self, id: &str, drain: bool) -> Result<bool> {
                let r = self.run(self.query("UPDATE instances SET drain_requested = $2 WHERE id = $1")
                    .bind(id)
                    .bind(i64::from(drain))
                    )
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn acquire_lease(&self, role: &str, holder: &str, lease_ms: i64) -> Result<Option<Grant>> {
                let row = self.opt(self.query(concat!(
                    "UPDATE leases SET holder = $2, term = term + 1, expires_at = ", $now, " + $3, acquired_at = ", $now, " ",
                    "WHERE role = $1 AND (holder IS NULL OR expires_at <= ", $now, ") RETURNING term, expires_at"
                ))
                .bind(role)
                .bind(holder)
                .bind(lease_ms)
                )
                .await?;
                row.as_ref().map(grant_row).transpose()
            }

            async fn renew_lease(&self, role: &str, holder: &str, term: i64, lease_ms: i64) -> Result<Option<Grant>> {
                let row = self.opt(self.query(concat!(
                    "UPDATE leases SET expires_at = ", $now, " + $4 WHERE role = $1 AND holder = $2 AND term = $3 ",
                    "AND expires_at > ", $now, " RETURNING term, expires_at"
                ))
                .bind(role)
                .bind(holder)
                .bind(term)
                .bind(lease_ms)
                )
                .await?;
                row.as_ref().map(grant_row).transpose()
            }

            async fn release_lease(&self, role: &str, holder: &str, term: i64) -> Result<bool> {
                let r = self.run(self.query(concat!(
                    "UPDATE leases SET holder = NULL, expires_at = ", $now, " WHERE role = $1 AND holder = $2 AND term = $3 ",
                    "AND expires_at > ", $now
                ))
                .bind(role)
                .bind(holder)
                .bind(term)
                )
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn leases(&self) -> Result<Vec<Lease>> {
                let rows = self.all(self.query("SELECT role, holder, term, expires_at, acquired_at FROM leases ORDER BY role")
                    )
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(Lease {
                            role: r.try_get("role")?,
                            holder: r.try_get("holder")?,
                            term: r.try_get("term")?,
                            expires_at: r.try_get("expires_at")?,
                            acquired_at: r.try_get("acquired_at")?,
                        })
                    })
                    .collect()
            }

            async fn lease_history(&self, limit: i64) -> Result<Vec<Handover>> {
                let rows = self.all(self.query(
                    "SELECT role, term, holder, held_from, held_until, ended FROM lease_history ORDER BY held_from DESC, role LIMIT $1",
                )
                .bind(limit)
                )
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(Handover {
                            role: r.try_get("role")?,
                            term: r.try_get("term")?,
                            holder: r.try_get("holder")?,
                            held_from: r.try_get("held_from")?,
                            held_until: r.try_get("held_until")?,
                            ended: r.try_get("ended")?,
                        })
                    })
                    .collect()
            }

            async fn cache_version(&self, kind: &str) -> Result<i64> {
                let row = self.opt(self.query("SELECT version FROM cache_versions WHERE kind = $1").bind(kind)).await?;
                Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
            }

            async fn bump_cache(&self, kind: &str) -> Result<i64> {
                let row = self.one(self.query(
                    "INSERT INTO cache_versions (kind, version) VALUES ($1, 1) ON CONFLICT (kind) DO UPDATE \
                     SET version = cache_versions.version + 1 RETURNING version",
                )
                .bind(kind)
                )
                .await?;
                Ok(row.try_get(0)?)
            }

            async fn create_schedule(&self, spec: &ScheduleSpec, next_fire_at: Option<Millis>, by: Option<&str>) -> Result<Schedule> {
                let row = self
                    .one(self.query(concat!(
                        "INSERT INTO schedules (", schedule_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, ",
                        "$12, $13, $14, $15, $16, $17, NULL, 0, ", $now, ", ", $now, ", $18) RETURNING ", schedule_cols!()
                    ))
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(&spec.name)
                    .bind(&spec.template_id)
                    .bind(&spec.template_name)
                    .bind(&spec.cron)
                    .bind(&spec.timezone)
                    .bind(&spec.parameters)
                    .bind(&spec.data)
                    .bind(serde_json::to_string(&spec.recipients).unwrap_or_default())
                    .bind(&spec.subject)
                    .bind(&spec.body)
                    .bind(i64::from(spec.enabled))
                    .bind(i64::from(spec.hold_for_review))
                    .bind(spec.jitter_ms)
                    .bind(spec.misfire.as_str())
                    .bind(spec.misfire_window_ms)
                    .bind(next_fire_at)
                    .bind(by))
                    .await
                    .map_err(|e| conflict(e, "name", || format!("a schedule named {}", spec.name)))?;
                schedule_row(&row)
            }

            async fn update_schedule(&self, id: &str, spec: &ScheduleSpec, next_fire_at: Option<Millis>) -> Result<Option<Schedule>> {
                let row = self
                    .opt(self.query(concat!(
                        "UPDATE schedules SET name = $2, template_id = $3, template_name = $4, cron = $5, timezone = $6, ",
                        "parameters = $7, data = $8, recipients = $9, subject = $10, body = $11, enabled = $12, ",
                        "hold_for_review = $13, jitter_ms = $14, misfire = $15, misfire_window_ms = $16, next_fire_at = $17, ",
                        "updated_at = ", $now, " WHERE id = $1 RETURNING ", schedule_cols!()
                    ))
                    .bind(id)
                    .bind(&spec.name)
                    .bind(&spec.template_id)
                    .bind(&spec.template_name)
                    .bind(&spec.cron)
                    .bind(&spec.timezone)
                    .bind(&spec.parameters)
                    .bind(&spec.data)
                    .bind(serde_json::to_string(&spec.recipients).unwrap_or_default())
                    .bind(&spec.subject)
                    .bind(&spec.body)
                    .bind(i64::from(spec.enabled))
                    .bind(i64::from(spec.hold_for_review))
                    .bind(spec.jitter_ms)
                    .bind(spec.misfire.as_str())
                    .bind(spec.misfire_window_ms)
                    .bind(next_fire_at))
                    .await
                    .map_err(|e| conflict(e, "name", || format!("a schedule named {}", spec.name)))?;
                row.as_ref().map(schedule_row).transpose()
            }

            async fn schedules(&self) -> Result<Vec<Schedule>> {
                let rows = self.all(self.query(concat!("SELECT ", schedule_cols!(), " FROM schedules ORDER BY name"))).await?;
                rows.iter().map(schedule_row).collect()
            }

            async fn schedule(&self, id_or_name: &str) -> Result<Option<Schedule>> {
                let row = self
                    .opt(self.query(concat!("SELECT ", schedule_cols!(), " FROM schedules WHERE id = $1 OR name = $1")).bind(id_or_name))
                    .await?;
                row.as_ref().map(schedule_row).transpose()
            }

            async fn delete_schedule(&self, id: &str) -> Result<bool> {
                let r = self.run(self.query("DELETE FROM schedules WHERE id = $1").bind(id)).await?;
                Ok(r.rows_affected() > 0)
            }

            async fn due_schedules(&self, limit: i64) -> Result<(Millis, Vec<Schedule>)> {
                let now = self.db_now().await?;
                let rows = self
                    .all(self.query(concat!(
                        "SELECT ", schedule_cols!(), " FROM schedules WHERE enabled = 1 AND next_fire_at IS NOT NULL ",
                        "AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2"
                    ))
                    .bind(now)
                    .bind(limit))
                    .await?;
                Ok((now, rows.iter().map(schedule_row).collect::<Result<_>>()?))
            }

            async fn fire_schedule(
                &self,
                schedule_id: &str,
                expected_next: Millis,
                firings: &[Firing],
                new_next: Option<Millis>,
                skipped: i64,
                fence: &Fence,
            ) -> Result<bool> {
                let mut tx = self.write_tx().await?;
                if !self.fenced(&mut tx, fence).await? {
                    return Ok(false);
                }
                let last = firings.iter().map(|f| f.fire_at).max();
                let moved = self
                    .query(concat!(
                        "UPDATE schedules SET next_fire_at = $3, last_fire_at = COALESCE($4, last_fire_at), ",
                        "skipped_total = skipped_total + $5 WHERE id = $1 AND next_fire_at = $2"
                    ))
                    .bind(schedule_id)
                    .bind(expected_next)
                    .bind(new_next)
                    .bind(last)
                    .bind(skipped)
                    .execute(&mut *tx)
                    .await?;
                if moved.rows_affected() != 1 {
                    return Ok(false);
                }
                for f in firings {
                    let state = if f.job.is_some() { "rendering" } else { "failed" };
                    // A fire time recorded before (a schedule edited back to it) is not run again.
                    let inserted = self
                        .query(concat!(
                            "INSERT INTO occurrences (id, schedule_id, fire_at, created_at, term, instance, job_id, state, error) ",
                            "VALUES ($1, $2, $3, ", $now, ", $4, $5, $6, $7, $8) ON CONFLICT (schedule_id, fire_at) DO NOTHING RETURNING id"
                        ))
                        .bind(uuid::Uuid::now_v7().to_string())
                        .bind(schedule_id)
                        .bind(f.fire_at)
                        .bind(fence.term)
                        .bind(&fence.holder)
                        .bind(f.job.as_ref().map(|j| j.id.as_str()))
                        .bind(state)
                        .bind(&f.error)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let (Some(_), Some(job)) = (inserted, &f.job) {
                        self.insert_job(&mut tx, job).await?;
                        self.event(&mut tx, &job.id, &EventFields::state(JobState::Queued, "queued", 0, None)).await?;
                    }
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn occurrences(&self, schedule_id: &str, limit: i64) -> Result<Vec<Occurrence>> {
                let rows = self
                    .all(self.query(concat!(
                        "SELECT ", occurrence_cols!(), " FROM occurrences WHERE schedule_id = $1 ORDER BY fire_at DESC LIMIT $2"
                    ))
                    .bind(schedule_id)
                    .bind(limit))
                    .await?;
                rows.iter().map(occurrence_row).collect()
            }

            async fn occurrence(&self, id: &str) -> Result<Option<Occurrence>> {
                let row = self.opt(self.query(concat!("SELECT ", occurrence_cols!(), " FROM occurrences WHERE id = $1")).bind(id)).await?;
                row.as_ref().map(occurrence_row).transpose()
            }

            async fn rendered_occurrences(&self, limit: i64) -> Result<Vec<Rendered>> {
                let rows = self
                    .all(self.query(
                        "SELECT o.id AS occurrence_id, j.state AS job_state, j.error AS job_error FROM occurrences o \
                         JOIN render_jobs j ON j.id = o.job_id \
                         WHERE o.state = 'rendering' AND j.state IN ('succeeded', 'failed', 'cancelled') \
                         ORDER BY o.fire_at LIMIT $1",
                    )
                    .bind(limit))
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let id: String = r.try_get("occurrence_id")?;
                    let state: String = r.try_get("job_state")?;
                    let Some(occurrence) = self.occurrence(&id).await? else { continue };
                    let Some(schedule) = self.schedule(&occurrence.schedule_id).await? else { continue };
                    out.push(Rendered {
                        occurrence,
                        schedule,
                        job_state: JobState::parse(&state).ok_or(StoreError::Corrupt("render_jobs.state"))?,
                        job_error: parse_error(r.try_get("job_error")?)?,
                    });
                }
                Ok(out)
            }

            async fn settle_occurrence(
                &self,
                id: &str,
                state: OccurrenceState,
                mails: &[NewMail],
                error: Option<&str>,
                fence: &Fence,
            ) -> Result<bool> {
                let mut tx = self.write_tx().await?;
                if !self.fenced(&mut tx, fence).await? {
                    return Ok(false);
                }
                let moved = self
                    .query("UPDATE occurrences SET state = $2, error = $3 WHERE id = $1 AND state = 'rendering'")
                    .bind(id)
                    .bind(state.as_str())
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                if moved.rows_affected() != 1 {
                    return Ok(false);
                }
                self.insert_mails(&mut tx, mails).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn review_occurrence(&self, id: &str, approve: bool, by: &str, mails: &[NewMail]) -> Result<Option<Occurrence>> {
                let mut tx = self.write_tx().await?;
                let state = if approve { "delivering" } else { "rejected" };
                let row = self
                    .query(concat!(
                        "UPDATE occurrences SET state = $2, reviewed_by = $3, reviewed_at = ", $now, " ",
                        "WHERE id = $1 AND state = 'held' RETURNING ", occurrence_cols!()
                    ))
                    .bind(id)
                    .bind(state)
                    .bind(by)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                if approve {
                    self.insert_mails(&mut tx, mails).await?;
                }
                tx.commit().await?;
                Ok(Some(occurrence_row(&row)?))
            }

            async fn claim_mails(&self, limit: i64, lease_ms: i64, fence: &Fence) -> Result<Vec<Mail>> {
                let mut tx = self.write_tx().await?;
                if !self.fenced(&mut tx, fence).await? {
                    return Ok(Vec::new());
                }
                let ids = self
                    .query(concat!(
                        "SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= ", $now,
                        " ORDER BY next_attempt_at, id LIMIT $1 ", $skip
                    ))
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut out = Vec::with_capacity(ids.len());
                for r in ids {
                    let id: String = r.try_get(0)?;
                    let row = self
                        .query(concat!(
                            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, claimed_by = $2, claim_expires_at = ",
                            $now, " + $3, updated_at = ", $now, " WHERE id = $1 RETURNING ", mail_cols!()
                        ))
                        .bind(&id)
                        .bind(&fence.holder)
                        .bind(lease_ms)
                        .fetch_one(&mut *tx)
                        .await?;
                    out.push(mail_row(&row)?);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn mail_sent(&self, id: &str, holder: &str, reply: &str) -> Result<()> {
                let mut tx = self.write_tx().await?;
                let row = self
                    .query(concat!(
                        "UPDATE outbox SET state = 'sent', sent_at = ", $now, ", last_reply = $2, claimed_by = NULL, ",
                        "claim_expires_at = NULL, updated_at = ", $now, " WHERE id = $1 AND state = 'sending' AND claimed_by = $3 ",
                        "RETURNING occurrence_id"
                    ))
                    .bind(id)
                    .bind(reply)
                    .bind(holder)
                    .fetch_optional(&mut *tx)
                    .await?;
                self.follow_mails(&mut tx, row).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn mail_failed(&self, id: &str, holder: &str, reply: &str, retry_at: Option<Millis>) -> Result<()> {
                let mut tx = self.write_tx().await?;
                let row = self
                    .query(concat!(
                        "UPDATE outbox SET state = CASE WHEN $3 IS NULL THEN 'failed' ELSE 'queued' END, ",
                        "next_attempt_at = COALESCE($3, next_attempt_at), last_reply = $2, claimed_by = NULL, ",
                        "claim_expires_at = NULL, updated_at = ", $now, " WHERE id = $1 AND state = 'sending' AND claimed_by = $4 ",
                        "RETURNING occurrence_id"
                    ))
                    .bind(id)
                    .bind(reply)
                    .bind(retry_at)
                    .bind(holder)
                    .fetch_optional(&mut *tx)
                    .await?;
                self.follow_mails(&mut tx, row).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn release_mails(&self, ids: &[String], holder: &str) -> Result<()> {
                let mut tx = self.write_tx().await?;
                for id in ids {
                    self.query(concat!(
                        "UPDATE outbox SET state = 'queued', attempts = attempts - 1, claimed_by = NULL, claim_expires_at = NULL, ",
                        "updated_at = ", $now, " WHERE id = $1 AND state = 'sending' AND claimed_by = $2"
                    ))
                    .bind(id)
                    .bind(holder)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn recover_mails(&self) -> Result<u64> {
                let r = self
                    .run(self.query(concat!(
                        "UPDATE outbox SET state = 'queued', claimed_by = NULL, claim_expires_at = NULL, updated_at = ", $now,
                        " WHERE state = 'sending' AND claim_expires_at < ", $now
                    )))
                    .await?;
                Ok(r.rows_affected())
            }

            async fn mails_of(&self, occurrence_id: &str) -> Result<Vec<Mail>> {
                let rows = self
                    .all(self.query(concat!("SELECT ", mail_cols!(), " FROM outbox WHERE occurrence_id = $1 ORDER BY recipient"))
                    .bind(occurrence_id))
                    .await?;
                rows.iter().map(mail_row).collect()
            }

            async fn mails(&self, state: Option<MailState>, limit: i64) -> Result<Vec<Mail>> {
                let rows = self
                    .all(self.query(concat!(
                        "SELECT ", mail_cols!(), " FROM outbox WHERE ($1 IS NULL OR state = $1) ORDER BY created_at DESC, id LIMIT $2"
                    ))
                    .bind(state.map(MailState::as_str))
                    .bind(limit))
                    .await?;
                rows.iter().map(mail_row).collect()
            }

            async fn resend_mail(&self, id: &str) -> Result<Option<Mail>> {
                let mut tx = self.write_tx().await?;
                let row = self
                    .query(concat!(
                        "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = ", $now, ", updated_at = ", $now,
                        " WHERE id = $1 AND state IN ('sent', 'failed') RETURNING ", mail_cols!()
                    ))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let mail = mail_row(&row)?;
                if let Some(occ) = &mail.occurrence_id {
                    self.query(occurrence_follows_mails!()).bind(occ).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(Some(mail))
            }

            async fn flag(&self, key: &str) -> Result<Option<String>> {
                let row = self.opt(self.query("SELECT value FROM flags WHERE key = $1").bind(key)).await?;
                Ok(row.map(|r| r.try_get(0)).transpose()?)
            }

            async fn set_flag(&self, key: &str, value: &str) -> Result<()> {
                self.run(self.query("INSERT INTO flags (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                    .bind(key)
                    .bind(value)
                    )
                    .await?;
                Ok(())
            }

            async fn init_flag(&self, key: &str, value: &str) -> Result<String> {
                self.run(self.query("INSERT INTO flags (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    )
                    .await?;
                Ok(self.flag(key).await?.unwrap_or_else(|| value.to_owned()))
            }
        }
    };
}
