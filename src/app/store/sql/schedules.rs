//! Schedules and their occurrences. Firing and settling happen under the scheduler's fence, in one
//! transaction with the jobs and mails they create.

use async_trait::async_trait;

use super::cluster::fenced;
use super::db::{Backend, Query, Row, Sql};
use super::jobs::{EventFields, insert_event, insert_job, parse_error};
use super::outbox::insert_mails;
use super::{SqlStore, conflict};
use crate::app::model::{
    Fence, Firing, JobState, Millis, Misfire, NewMail, Occurrence, OccurrenceState, Rendered,
    Schedule, ScheduleSpec,
};
use crate::app::store::{ClusterStore, Result, ScheduleStore, StoreError};

const SCHEDULE_COLS: &str = "id, name, template_id, template_name, cron, timezone, parameters, \
    data, recipients, subject, body, enabled, hold_for_review, jitter_ms, misfire, \
    misfire_window_ms, next_fire_at, last_fire_at, skipped_total, created_at, updated_at, \
    created_by, burst";

pub(super) const OCCURRENCE_COLS: &str = "id, schedule_id, fire_at, created_at, term, instance, \
    job_id, state, error, reviewed_by, reviewed_at, burst_rows";

pub(super) fn schedule_row(r: &impl Row) -> Result<Schedule> {
    let recipients: String = r.try_get("recipients")?;
    let burst: Option<String> = r.try_get("burst")?;
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
            recipients: serde_json::from_str(&recipients)
                .map_err(|_| StoreError::Corrupt("schedules.recipients"))?,
            subject: r.try_get("subject")?,
            body: r.try_get("body")?,
            enabled: r.try_get::<i64, _>("enabled")? != 0,
            hold_for_review: r.try_get::<i64, _>("hold_for_review")? != 0,
            jitter_ms: r.try_get("jitter_ms")?,
            misfire: Misfire::parse(&misfire).ok_or(StoreError::Corrupt("schedules.misfire"))?,
            misfire_window_ms: r.try_get("misfire_window_ms")?,
            burst: burst
                .map(|b| serde_json::from_str(&b))
                .transpose()
                .map_err(|_| StoreError::Corrupt("schedules.burst"))?,
        },
        next_fire_at: r.try_get("next_fire_at")?,
        last_fire_at: r.try_get("last_fire_at")?,
        skipped_total: r.try_get("skipped_total")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        created_by: r.try_get("created_by")?,
    })
}

pub(super) fn occurrence_row(r: &impl Row) -> Result<Occurrence> {
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
        burst_rows: r.try_get("burst_rows")?,
    })
}

fn recipients_json(spec: &ScheduleSpec) -> String {
    serde_json::to_string(&spec.recipients).unwrap_or_default()
}

fn burst_json(spec: &ScheduleSpec) -> Option<String> {
    spec.burst
        .as_ref()
        .map(|b| serde_json::to_string(b).unwrap_or_default())
}

/// Binds a schedule's settings as `$2` to `$17`, the order both the insert and the update use.
fn bind_spec<'a, B: Backend>(q: Query<'a, B>, spec: &ScheduleSpec) -> Query<'a, B> {
    q.bind(&spec.name)
        .bind(&spec.template_id)
        .bind(&spec.template_name)
        .bind(&spec.cron)
        .bind(&spec.timezone)
        .bind(&spec.parameters)
        .bind(&spec.data)
        .bind(recipients_json(spec))
        .bind(&spec.subject)
        .bind(&spec.body)
        .bind(i64::from(spec.enabled))
        .bind(i64::from(spec.hold_for_review))
        .bind(spec.jitter_ms)
        .bind(spec.misfire.as_str())
        .bind(spec.misfire_window_ms)
}

#[async_trait]
impl<B: Backend> ScheduleStore for SqlStore<B> {
    async fn create_schedule(
        &self,
        spec: &ScheduleSpec,
        next_fire_at: Option<Millis>,
        by: Option<&str>,
    ) -> Result<Schedule> {
        static CREATE: Sql = Sql::new(&[
            "INSERT INTO schedules (",
            SCHEDULE_COLS,
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, NULL, 0, {now}, {now}, $18, $19) RETURNING ",
            SCHEDULE_COLS,
        ]);
        let q = self
            .db
            .query(&CREATE)
            .bind(uuid::Uuid::now_v7().to_string());
        let row = bind_spec(q, spec)
            .bind(next_fire_at)
            .bind(by)
            .bind(burst_json(spec))
            .fetch_one()
            .await
            .map_err(|e| conflict(e, "name", || format!("a schedule named {}", spec.name)))?;
        schedule_row(&row)
    }

    async fn update_schedule(
        &self,
        id: &str,
        spec: &ScheduleSpec,
        next_fire_at: Option<Millis>,
    ) -> Result<Option<Schedule>> {
        static UPDATE: Sql = Sql::new(&[
            "UPDATE schedules SET name = $2, template_id = $3, template_name = $4, cron = $5, \
             timezone = $6, parameters = $7, data = $8, recipients = $9, subject = $10, \
             body = $11, enabled = $12, hold_for_review = $13, jitter_ms = $14, misfire = $15, \
             misfire_window_ms = $16, next_fire_at = $17, burst = $18, updated_at = {now} \
             WHERE id = $1 RETURNING ",
            SCHEDULE_COLS,
        ]);
        let row = bind_spec(self.db.query(&UPDATE).bind(id), spec)
            .bind(next_fire_at)
            .bind(burst_json(spec))
            .fetch_optional()
            .await
            .map_err(|e| conflict(e, "name", || format!("a schedule named {}", spec.name)))?;
        row.as_ref().map(schedule_row).transpose()
    }

    async fn schedules(&self) -> Result<Vec<Schedule>> {
        static ALL: Sql = Sql::new(&["SELECT ", SCHEDULE_COLS, " FROM schedules ORDER BY name"]);
        self.db.query(&ALL).fetch_all_as(schedule_row).await
    }

    async fn schedule(&self, id_or_name: &str) -> Result<Option<Schedule>> {
        static ONE: Sql = Sql::new(&[
            "SELECT ",
            SCHEDULE_COLS,
            " FROM schedules WHERE id = $1 OR name = $1",
        ]);
        self.db
            .query(&ONE)
            .bind(id_or_name)
            .fetch_optional_as(schedule_row)
            .await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        let deleted = self
            .db
            .query("DELETE FROM schedules WHERE id = $1")
            .bind(id)
            .execute()
            .await?;
        Ok(deleted > 0)
    }

    async fn due_schedules(&self, limit: i64) -> Result<(Millis, Vec<Schedule>)> {
        let now = self.db_now().await?;
        static DUE: Sql = Sql::new(&[
            "SELECT ",
            SCHEDULE_COLS,
            " FROM schedules WHERE enabled = 1 AND next_fire_at IS NOT NULL \
             AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2",
        ]);
        let rows = self
            .db
            .query(&DUE)
            .bind(now)
            .bind(limit)
            .fetch_all()
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
        let mut tx = self.db.begin_write().await?;
        if !fenced(&mut tx, fence).await? {
            return Ok(false);
        }
        let last = firings.iter().map(|f| f.fire_at).max();
        let moved = tx
            .query(
                "UPDATE schedules SET next_fire_at = $3, \
                 last_fire_at = COALESCE($4, last_fire_at), skipped_total = skipped_total + $5 \
                 WHERE id = $1 AND next_fire_at = $2",
            )
            .bind(schedule_id)
            .bind(expected_next)
            .bind(new_next)
            .bind(last)
            .bind(skipped)
            .execute()
            .await?;
        if moved != 1 {
            return Ok(false);
        }
        static OCCURRENCE: Sql = Sql::new(&[
            "INSERT INTO occurrences (id, schedule_id, fire_at, created_at, term, instance, \
             job_id, state, error) VALUES ($1, $2, $3, {now}, $4, $5, $6, $7, $8) \
             ON CONFLICT (schedule_id, fire_at) DO NOTHING RETURNING id",
        ]);
        for f in firings {
            let state = match (&f.job, &f.error) {
                (Some(_), _) => "rendering",
                (None, Some(_)) => "failed",
                (None, None) => "bursting",
            };
            // A fire time recorded before (a schedule edited back to it) is not run again.
            let inserted = tx
                .query(&OCCURRENCE)
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(schedule_id)
                .bind(f.fire_at)
                .bind(fence.term)
                .bind(&fence.holder)
                .bind(f.job.as_ref().map(|j| j.id.as_str()))
                .bind(state)
                .bind(&f.error)
                .fetch_optional()
                .await?;
            if let (Some(_), Some(job)) = (inserted, &f.job) {
                insert_job(&mut tx, job).await?;
                let queued = EventFields::state(JobState::Queued, "queued", 0, None);
                insert_event(&mut tx, &job.id, &queued).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn occurrences(&self, schedule_id: &str, limit: i64) -> Result<Vec<Occurrence>> {
        static OF_SCHEDULE: Sql = Sql::new(&[
            "SELECT ",
            OCCURRENCE_COLS,
            " FROM occurrences WHERE schedule_id = $1 ORDER BY fire_at DESC LIMIT $2",
        ]);
        self.db
            .query(&OF_SCHEDULE)
            .bind(schedule_id)
            .bind(limit)
            .fetch_all_as(occurrence_row)
            .await
    }

    async fn occurrence(&self, id: &str) -> Result<Option<Occurrence>> {
        static ONE: Sql = Sql::new(&[
            "SELECT ",
            OCCURRENCE_COLS,
            " FROM occurrences WHERE id = $1",
        ]);
        self.db
            .query(&ONE)
            .bind(id)
            .fetch_optional_as(occurrence_row)
            .await
    }

    async fn rendered_occurrences(&self, limit: i64) -> Result<Vec<Rendered>> {
        let rows = self
            .db
            .query(
                "SELECT o.id AS occurrence_id, j.state AS job_state, j.error AS job_error \
                 FROM occurrences o JOIN render_jobs j ON j.id = o.job_id \
                 WHERE o.state = 'rendering' AND j.state IN ('succeeded', 'failed', 'cancelled') \
                 ORDER BY o.fire_at LIMIT $1",
            )
            .bind(limit)
            .fetch_all()
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get("occurrence_id")?;
            let state: String = r.try_get("job_state")?;
            let Some(occurrence) = self.occurrence(&id).await? else {
                continue;
            };
            let Some(schedule) = self.schedule(&occurrence.schedule_id).await? else {
                continue;
            };
            out.push(Rendered {
                occurrence,
                schedule,
                job_state: JobState::parse(&state)
                    .ok_or(StoreError::Corrupt("render_jobs.state"))?,
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
        let mut tx = self.db.begin_write().await?;
        if !fenced(&mut tx, fence).await? {
            return Ok(false);
        }
        let moved = tx
            .query(
                "UPDATE occurrences SET state = $2, error = $3 \
                 WHERE id = $1 AND state = 'rendering'",
            )
            .bind(id)
            .bind(state.as_str())
            .bind(error)
            .execute()
            .await?;
        if moved != 1 {
            return Ok(false);
        }
        insert_mails(&mut tx, mails).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn review_occurrence(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        mails: &[NewMail],
    ) -> Result<Option<Occurrence>> {
        let mut tx = self.db.begin_write().await?;
        let state = if approve { "delivering" } else { "rejected" };
        static REVIEW: Sql = Sql::new(&[
            "UPDATE occurrences SET state = $2, reviewed_by = $3, reviewed_at = {now} \
             WHERE id = $1 AND state = 'held' RETURNING ",
            OCCURRENCE_COLS,
        ]);
        let row = tx
            .query(&REVIEW)
            .bind(id)
            .bind(state)
            .bind(by)
            .fetch_optional()
            .await?;
        let Some(row) = row else { return Ok(None) };
        if approve {
            insert_mails(&mut tx, mails).await?;
        }
        tx.commit().await?;
        Ok(Some(occurrence_row(&row)?))
    }
}
