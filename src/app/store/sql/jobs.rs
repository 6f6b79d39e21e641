//! Render jobs, their progress events and outputs. Every statement that changes a job's state runs
//! in a transaction that also appends the event describing the change (`insert_event`).

use async_trait::async_trait;

use super::SqlStore;
use super::db::{Backend, Row, Sql, Tx};
use crate::app::model::{Job, JobError, JobEvent, JobFilter, JobState, NewJob, Outcome, Progress};
use crate::app::store::{Abandoned, JobStore, Result, StoreError};

const JOB_COLS: &str = "id, template_id, template_name, template_version, data, parameters, \
    state, stage, progress, error, pages, output_size, created_by, created_at, started_at, \
    finished_at, attempts, claimed_by, claim_token";

/// Job columns for listings: the (possibly large) data and parameters are left out.
const JOB_SUMMARY_COLS: &str = "id, template_id, template_name, template_version, '' AS data, \
    '{}' AS parameters, state, stage, progress, error, pages, output_size, created_by, \
    created_at, started_at, finished_at, attempts, claimed_by, claim_token";

const EVENT_COLS: &str =
    "job_id, seq, at, state, stage, progress, message, error, pages, output_size";

/// What an event records, borrowed from the caller.
pub(super) struct EventFields<'a> {
    state: JobState,
    stage: &'a str,
    progress: i64,
    message: Option<&'a str>,
    error: Option<&'a JobError>,
    pages: Option<i64>,
    output_size: Option<i64>,
}

impl<'a> EventFields<'a> {
    pub(super) fn state(
        state: JobState,
        stage: &'a str,
        progress: i64,
        message: Option<&'a str>,
    ) -> Self {
        EventFields {
            state,
            stage,
            progress,
            message,
            error: None,
            pages: None,
            output_size: None,
        }
    }
}

fn error_json(e: &JobError) -> String {
    serde_json::to_string(e).unwrap_or_default()
}

/// Reads a stored `JobError` (JSON).
pub(super) fn parse_error(s: Option<String>) -> Result<Option<JobError>> {
    s.map(|s| serde_json::from_str(&s).map_err(|_| StoreError::Corrupt("error")))
        .transpose()
}

fn job_row(r: &impl Row) -> Result<Job> {
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

fn event_row(r: &impl Row) -> Result<JobEvent> {
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

/// Appends the next event of a job; run after the statement that changed the job row (which
/// holds the row lock, so two writers cannot pick the same sequence number).
pub(super) async fn insert_event<B: Backend>(
    tx: &mut Tx<B>,
    job_id: &str,
    e: &EventFields<'_>,
) -> Result<JobEvent> {
    static INSERT: Sql = Sql::new(&[
        "INSERT INTO render_events (job_id, seq, at, state, stage, progress, message, error, \
         pages, output_size) SELECT $1, COALESCE(MAX(seq), 0) + 1, {now}, $2, $3, $4, $5, $6, \
         $7, $8 FROM render_events WHERE job_id = $1 RETURNING ",
        EVENT_COLS,
    ]);
    let row = tx
        .query(&INSERT)
        .bind(job_id)
        .bind(e.state.as_str())
        .bind(e.stage)
        .bind(e.progress)
        .bind(e.message)
        .bind(e.error.map(error_json))
        .bind(e.pages)
        .bind(e.output_size)
        .fetch_one()
        .await?;
    event_row(&row)
}

/// Writes a queued job (without its first event: see `insert_event`).
pub(super) async fn insert_job<B: Backend>(tx: &mut Tx<B>, job: &NewJob) -> Result<Job> {
    static INSERT: Sql = Sql::new(&[
        "INSERT INTO render_jobs (id, template_id, template_name, template_version, data, \
         parameters, state, stage, progress, created_by, created_at, attempts, agent_sources) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', 'queued', 0, $7, {now}, 0, $8) RETURNING ",
        JOB_COLS,
    ]);
    let row = tx
        .query(&INSERT)
        .bind(&job.id)
        .bind(&job.template_id)
        .bind(&job.template_name)
        .bind(job.template_version)
        .bind(&job.data)
        .bind(&job.parameters)
        .bind(&job.created_by)
        .bind(&job.agent_sources)
        .fetch_one()
        .await?;
    job_row(&row)
}

#[async_trait]
impl<B: Backend> JobStore for SqlStore<B> {
    async fn enqueue(&self, job: &NewJob, queue_limit: i64) -> Result<(Job, JobEvent)> {
        let mut tx = self.db.begin_write().await?;
        let depth: i64 = tx
            .query("SELECT COUNT(*) FROM render_jobs WHERE state = 'queued'")
            .fetch_one()
            .await?
            .try_get(0)?;
        if depth >= queue_limit {
            return Err(StoreError::QueueFull(depth));
        }
        let job = insert_job(&mut tx, job).await?;
        let queued = EventFields::state(JobState::Queued, "queued", 0, None);
        let event = insert_event(&mut tx, &job.id, &queued).await?;
        tx.commit().await?;
        Ok((job, event))
    }

    async fn job(&self, id: &str) -> Result<Option<Job>> {
        static ONE: Sql = Sql::new(&["SELECT ", JOB_COLS, " FROM render_jobs WHERE id = $1"]);
        self.db
            .query(&ONE)
            .bind(id)
            .fetch_optional_as(job_row)
            .await
    }

    async fn jobs(&self, f: &JobFilter) -> Result<Vec<Job>> {
        static LIST: Sql = Sql::new(&[
            "SELECT ",
            JOB_SUMMARY_COLS,
            " FROM render_jobs WHERE ($1 IS NULL OR created_by = $1) \
             AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR template_id = $3) \
             AND ($4 IS NULL OR created_at < $4) ORDER BY created_at DESC, id DESC LIMIT $5",
        ]);
        self.db
            .query(&LIST)
            .bind(&f.created_by)
            .bind(f.state.map(JobState::as_str))
            .bind(&f.template_id)
            .bind(f.before)
            .bind(f.limit)
            .fetch_all_as(job_row)
            .await
    }

    async fn queue_depth(&self) -> Result<i64> {
        let row = self
            .db
            .query("SELECT COUNT(*) FROM render_jobs WHERE state = 'queued'")
            .fetch_one()
            .await?;
        row.try_get(0)
    }

    async fn claim(
        &self,
        instance: &str,
        token: &str,
        lease_ms: i64,
        reach: Option<&str>,
    ) -> Result<Option<(Job, JobEvent)>> {
        let mut tx = self.db.begin_write().await?;
        static CLAIM: Sql = Sql::new(&[
            "UPDATE render_jobs SET state = 'running', stage = 'starting', progress = 5, \
             claimed_by = $1, claim_token = $2, claim_expires_at = {now} + $3, \
             started_at = {now} WHERE id = (SELECT id FROM render_jobs WHERE state = 'queued' \
             AND ($4 IS NULL OR agent_sources IS NULL OR $4 LIKE agent_sources ESCAPE '\\') \
             ORDER BY created_at, id LIMIT 1 {skip_locked}) AND state = 'queued' RETURNING ",
            JOB_COLS,
        ]);
        let row = tx
            .query(&CLAIM)
            .bind(instance)
            .bind(token)
            .bind(lease_ms)
            .bind(reach)
            .fetch_optional()
            .await?;
        let Some(row) = row else { return Ok(None) };
        let job = job_row(&row)?;
        let starting = EventFields::state(JobState::Running, "starting", 5, None);
        let event = insert_event(&mut tx, &job.id, &starting).await?;
        tx.commit().await?;
        Ok(Some((job, event)))
    }

    async fn renew_claim(&self, job_id: &str, token: &str, lease_ms: i64) -> Result<bool> {
        static RENEW: Sql = Sql::new(&["UPDATE render_jobs SET claim_expires_at = {now} + $3 \
             WHERE id = $1 AND claim_token = $2 AND state = 'running'"]);
        let renewed = self
            .db
            .query(&RENEW)
            .bind(job_id)
            .bind(token)
            .bind(lease_ms)
            .execute()
            .await?;
        Ok(renewed == 1)
    }

    async fn progress(&self, job_id: &str, token: &str, p: &Progress) -> Result<Option<JobEvent>> {
        let mut tx = self.db.begin_write().await?;
        let changed = tx
            .query(
                "UPDATE render_jobs SET stage = $3, progress = $4, pages = COALESCE($5, pages) \
                 WHERE id = $1 AND claim_token = $2 AND state = 'running'",
            )
            .bind(job_id)
            .bind(token)
            .bind(&p.stage)
            .bind(p.progress)
            .bind(p.pages)
            .execute()
            .await?;
        if changed != 1 {
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
        let event = insert_event(&mut tx, job_id, &fields).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn finish(
        &self,
        job_id: &str,
        token: &str,
        outcome: &Outcome,
        retention_ms: i64,
    ) -> Result<Option<JobEvent>> {
        let mut tx = self.db.begin_write().await?;
        let (state, stage, error, pages, size) = match outcome {
            Outcome::Succeeded { pdf, pages } => (
                JobState::Succeeded,
                "done",
                None,
                Some(*pages),
                Some(pdf.len() as i64),
            ),
            Outcome::Failed(e) => (JobState::Failed, "failed", Some(e), None, None),
        };
        static FINISH: Sql = Sql::new(&[
            "UPDATE render_jobs SET state = $3, stage = $4, progress = 100, error = $5, \
             pages = COALESCE($6, pages), output_size = $7, finished_at = {now}, \
             expires_at = {now} + $8, claim_token = NULL, claim_expires_at = NULL \
             WHERE id = $1 AND claim_token = $2 AND state = 'running'",
        ]);
        let changed = tx
            .query(&FINISH)
            .bind(job_id)
            .bind(token)
            .bind(state.as_str())
            .bind(stage)
            .bind(error.map(error_json))
            .bind(pages)
            .bind(size)
            .bind(retention_ms)
            .execute()
            .await?;
        if changed != 1 {
            return Ok(None);
        }
        if let Outcome::Succeeded { pdf, .. } = outcome {
            tx.query(
                "INSERT INTO render_outputs (job_id, pdf) VALUES ($1, $2) \
                 ON CONFLICT (job_id) DO UPDATE SET pdf = excluded.pdf",
            )
            .bind(job_id)
            .bind(pdf)
            .execute()
            .await?;
        }
        let message = error.map(|e| e.message.as_str());
        let fields = EventFields {
            state,
            stage,
            progress: 100,
            message,
            error,
            pages,
            output_size: size,
        };
        let event = insert_event(&mut tx, job_id, &fields).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn release(&self, job_id: &str, token: &str, reason: &str) -> Result<Option<JobEvent>> {
        let mut tx = self.db.begin_write().await?;
        let changed = tx
            .query(
                "UPDATE render_jobs SET state = 'queued', stage = 'queued', progress = 0, \
                 claimed_by = NULL, claim_token = NULL, claim_expires_at = NULL \
                 WHERE id = $1 AND claim_token = $2 AND state = 'running'",
            )
            .bind(job_id)
            .bind(token)
            .execute()
            .await?;
        if changed != 1 {
            return Ok(None);
        }
        let queued = EventFields::state(JobState::Queued, "queued", 0, Some(reason));
        let event = insert_event(&mut tx, job_id, &queued).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn requeue_abandoned(
        &self,
        scope: Abandoned,
        max_attempts: i64,
        retention_ms: i64,
    ) -> Result<Vec<JobEvent>> {
        let mut tx = self.db.begin_write().await?;
        let rows = match scope {
            Abandoned::All => {
                static RUNNING: Sql = Sql::new(&[
                    "SELECT id, attempts, claimed_by FROM render_jobs WHERE state = 'running' \
                     {skip_locked}",
                ]);
                tx.query(&RUNNING).fetch_all().await?
            }
            Abandoned::Expired { stale_ms } => {
                static EXPIRED: Sql = Sql::new(&[
                    "SELECT id, attempts, claimed_by FROM render_jobs WHERE state = 'running' \
                     AND (claim_expires_at < {now} OR claimed_by IN \
                     (SELECT id FROM instances WHERE heartbeat_at < {now} - $1)) {skip_locked}",
                ]);
                tx.query(&EXPIRED).bind(stale_ms).fetch_all().await?
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
                        "gave up after {attempts} attempts: the instance running it stopped \
                         each time (last: {holder})"
                    ),
                    diagnostics: Vec::new(),
                };
                static GIVE_UP: Sql = Sql::new(&[
                    "UPDATE render_jobs SET state = 'failed', stage = 'failed', progress = 100, \
                     attempts = $2, error = $3, finished_at = {now}, expires_at = {now} + $4, \
                     claim_token = NULL, claim_expires_at = NULL WHERE id = $1",
                ]);
                tx.query(&GIVE_UP)
                    .bind(&id)
                    .bind(attempts)
                    .bind(error_json(&err))
                    .bind(retention_ms)
                    .execute()
                    .await?;
                let fields = EventFields {
                    error: Some(&err),
                    ..EventFields::state(JobState::Failed, "failed", 100, Some(&err.message))
                };
                events.push(insert_event(&mut tx, &id, &fields).await?);
            } else {
                tx.query(
                    "UPDATE render_jobs SET state = 'queued', stage = 'queued', progress = 0, \
                     attempts = $2, claimed_by = NULL, claim_token = NULL, \
                     claim_expires_at = NULL WHERE id = $1",
                )
                .bind(&id)
                .bind(attempts)
                .execute()
                .await?;
                let msg = format!("back in the queue: {holder} stopped while running it");
                let queued = EventFields::state(JobState::Queued, "queued", 0, Some(&msg));
                events.push(insert_event(&mut tx, &id, &queued).await?);
            }
        }
        tx.commit().await?;
        Ok(events)
    }

    async fn cancel(
        &self,
        job_id: &str,
        retention_ms: i64,
    ) -> Result<Option<(Job, Option<JobEvent>)>> {
        let mut tx = self.db.begin_write().await?;
        static CANCEL: Sql = Sql::new(&[
            "UPDATE render_jobs SET state = 'cancelled', stage = 'cancelled', \
             finished_at = {now}, expires_at = {now} + $2, claim_token = NULL, \
             claim_expires_at = NULL WHERE id = $1 AND state IN ('queued', 'running') \
             RETURNING ",
            JOB_COLS,
        ]);
        let row = tx
            .query(&CANCEL)
            .bind(job_id)
            .bind(retention_ms)
            .fetch_optional()
            .await?;
        let Some(row) = row else {
            drop(tx);
            return Ok(self.job(job_id).await?.map(|j| (j, None)));
        };
        let job = job_row(&row)?;
        let fields = EventFields::state(
            JobState::Cancelled,
            "cancelled",
            job.progress,
            Some("cancelled"),
        );
        let event = insert_event(&mut tx, job_id, &fields).await?;
        tx.commit().await?;
        Ok(Some((job, Some(event))))
    }

    async fn output(&self, job_id: &str) -> Result<Option<Vec<u8>>> {
        let row = self
            .db
            .query("SELECT pdf FROM render_outputs WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional()
            .await?;
        row.map(|r| r.try_get(0)).transpose()
    }

    async fn purge_expired(&self) -> Result<u64> {
        static JOBS: Sql = Sql::new(&[
            "DELETE FROM render_jobs WHERE expires_at IS NOT NULL AND expires_at < {now}",
        ]);
        static SESSIONS: Sql = Sql::new(&["DELETE FROM sessions WHERE expires_at < {now}"]);
        let purged = self.db.query(&JOBS).execute().await?;
        self.db.query(&SESSIONS).execute().await?;
        Ok(purged)
    }

    async fn events_after(&self, job_id: &str, after_seq: i64) -> Result<Vec<JobEvent>> {
        static AFTER: Sql = Sql::new(&[
            "SELECT ",
            EVENT_COLS,
            " FROM render_events WHERE job_id = $1 AND seq > $2 ORDER BY seq",
        ]);
        self.db
            .query(&AFTER)
            .bind(job_id)
            .bind(after_seq)
            .fetch_all_as(event_row)
            .await
    }
}
