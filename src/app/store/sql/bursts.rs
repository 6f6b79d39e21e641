//! The rows of bursting occurrences. Expanding, starting and settling rows happen under the
//! scheduler's fence, each in one transaction with the jobs and mails it creates; the
//! (occurrence, row key) key makes every row render and mail once.

use async_trait::async_trait;

use super::SqlStore;
use super::cluster::fenced;
use super::db::{Backend, Row, Sql, Tx};
use super::jobs::{EventFields, insert_event, insert_job, parse_error};
use super::outbox::insert_mails;
use super::schedules::{OCCURRENCE_COLS, occurrence_row};
use crate::app::model::{
    BurstCounts, BurstItem, BurstItemState, Fence, JobState, NewBurstItem, NewJob, NewMail,
    Occurrence, RenderedItem, Schedule,
};
use crate::app::store::{BurstStore, Result, ScheduleStore, StoreError};

const ITEM_COLS: &str = "b.occurrence_id, b.row_key, b.seq, b.parameters, b.recipients, \
    b.job_id, b.state, b.error, b.updated_at";

fn item_row(r: &impl Row) -> Result<BurstItem> {
    let recipients: String = r.try_get("recipients")?;
    let state: String = r.try_get("state")?;
    Ok(BurstItem {
        occurrence_id: r.try_get("occurrence_id")?,
        row_key: r.try_get("row_key")?,
        seq: r.try_get("seq")?,
        parameters: r.try_get("parameters")?,
        recipients: serde_json::from_str(&recipients)
            .map_err(|_| StoreError::Corrupt("burst_items.recipients"))?,
        job_id: r.try_get("job_id")?,
        state: BurstItemState::parse(&state).ok_or(StoreError::Corrupt("burst_items.state"))?,
        error: r.try_get("error")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Moves a bursting or held occurrence on after a change of its rows: bursting while rows wait
/// or render, held while any waits for review, then as its mails go (see `follow_mails`); a
/// burst whose rows were all rejected is rejected, one with no rows delivered.
async fn follow_items<B: Backend>(tx: &mut Tx<B>, occurrence_id: &str) -> Result<()> {
    tx.query(
        "UPDATE occurrences SET state = CASE \
         WHEN EXISTS (SELECT 1 FROM burst_items WHERE occurrence_id = $1 \
           AND state IN ('pending', 'rendering')) THEN 'bursting' \
         WHEN EXISTS (SELECT 1 FROM burst_items WHERE occurrence_id = $1 AND state = 'held') \
           THEN 'held' \
         WHEN EXISTS (SELECT 1 FROM outbox WHERE occurrence_id = $1 \
           AND state IN ('queued', 'sending')) THEN 'delivering' \
         WHEN EXISTS (SELECT 1 FROM burst_items WHERE occurrence_id = $1 AND state = 'failed') \
           OR EXISTS (SELECT 1 FROM outbox WHERE occurrence_id = $1 AND state = 'failed') \
           THEN 'failed' \
         WHEN EXISTS (SELECT 1 FROM burst_items WHERE occurrence_id = $1) \
           AND NOT EXISTS (SELECT 1 FROM burst_items WHERE occurrence_id = $1 \
           AND state <> 'rejected') THEN 'rejected' \
         ELSE 'delivered' END \
         WHERE id = $1 AND state IN ('bursting', 'held')",
    )
    .bind(occurrence_id)
    .execute()
    .await?;
    Ok(())
}

#[async_trait]
impl<B: Backend> BurstStore for SqlStore<B> {
    async fn bursting_occurrences(&self, limit: i64) -> Result<Vec<(Occurrence, Schedule)>> {
        static BURSTING: Sql = Sql::new(&[
            "SELECT ",
            OCCURRENCE_COLS,
            " FROM occurrences WHERE state = 'bursting' ORDER BY fire_at LIMIT $1",
        ]);
        let occurrences = self
            .db
            .query(&BURSTING)
            .bind(limit)
            .fetch_all_as(occurrence_row)
            .await?;
        let mut out = Vec::with_capacity(occurrences.len());
        for o in occurrences {
            if let Some(s) = self.schedule(&o.schedule_id).await? {
                out.push((o, s));
            }
        }
        Ok(out)
    }

    async fn expand_burst(
        &self,
        occurrence_id: &str,
        items: &[NewBurstItem],
        error: Option<&str>,
        fence: &Fence,
    ) -> Result<bool> {
        let mut tx = self.db.begin_write().await?;
        if !fenced(&mut tx, fence).await? {
            return Ok(false);
        }
        let claim = match error {
            Some(e) => tx
                .query(
                    "UPDATE occurrences SET burst_rows = 0, state = 'failed', error = $2 \
                     WHERE id = $1 AND state = 'bursting' AND burst_rows IS NULL",
                )
                .bind(occurrence_id)
                .bind(e),
            None => tx
                .query(
                    "UPDATE occurrences SET burst_rows = $2 \
                     WHERE id = $1 AND state = 'bursting' AND burst_rows IS NULL",
                )
                .bind(occurrence_id)
                .bind(items.len() as i64),
        };
        if claim.execute().await? != 1 {
            return Ok(false);
        }
        static INSERT: Sql = Sql::new(&[
            "INSERT INTO burst_items (occurrence_id, row_key, seq, parameters, recipients, \
             state, error, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, {now}) \
             ON CONFLICT (occurrence_id, row_key) DO NOTHING",
        ]);
        for (seq, item) in items.iter().enumerate() {
            let state = if item.error.is_some() {
                BurstItemState::Failed
            } else {
                BurstItemState::Pending
            };
            tx.query(&INSERT)
                .bind(occurrence_id)
                .bind(&item.row_key)
                .bind(seq as i64)
                .bind(&item.parameters)
                .bind(serde_json::to_string(&item.recipients).unwrap_or_default())
                .bind(state.as_str())
                .bind(&item.error)
                .execute()
                .await?;
        }
        follow_items(&mut tx, occurrence_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn burst_counts(&self, occurrence_id: &str) -> Result<BurstCounts> {
        let rows = self
            .db
            .query(
                "SELECT state, COUNT(*) AS n FROM burst_items WHERE occurrence_id = $1 \
                 GROUP BY state",
            )
            .bind(occurrence_id)
            .fetch_all()
            .await?;
        let mut c = BurstCounts::default();
        for r in rows {
            let state: String = r.try_get("state")?;
            let n: i64 = r.try_get("n")?;
            let slot = match BurstItemState::parse(&state) {
                Some(BurstItemState::Pending) => &mut c.pending,
                Some(BurstItemState::Rendering) => &mut c.rendering,
                Some(BurstItemState::Held) => &mut c.held,
                Some(BurstItemState::Mailed) => &mut c.mailed,
                Some(BurstItemState::Failed) => &mut c.failed,
                Some(BurstItemState::Rejected) => &mut c.rejected,
                None => return Err(StoreError::Corrupt("burst_items.state")),
            };
            *slot = n;
        }
        Ok(c)
    }

    async fn burst_items(
        &self,
        occurrence_id: &str,
        state: Option<BurstItemState>,
        limit: i64,
    ) -> Result<Vec<BurstItem>> {
        static ITEMS: Sql = Sql::new(&[
            "SELECT ",
            ITEM_COLS,
            " FROM burst_items b WHERE b.occurrence_id = $1 \
             AND ($2 = '' OR b.state = $2) ORDER BY b.seq LIMIT $3",
        ]);
        self.db
            .query(&ITEMS)
            .bind(occurrence_id)
            .bind(state.map_or("", BurstItemState::as_str))
            .bind(limit)
            .fetch_all_as(item_row)
            .await
    }

    async fn start_burst_items(
        &self,
        occurrence_id: &str,
        starts: &[(String, NewJob)],
        fence: &Fence,
    ) -> Result<usize> {
        let mut tx = self.db.begin_write().await?;
        if !fenced(&mut tx, fence).await? {
            return Ok(0);
        }
        static START: Sql = Sql::new(&[
            "UPDATE burst_items SET job_id = $3, state = 'rendering', updated_at = {now} \
             WHERE occurrence_id = $1 AND row_key = $2 AND state = 'pending'",
        ]);
        let mut started = 0;
        for (key, job) in starts {
            let moved = tx
                .query(&START)
                .bind(occurrence_id)
                .bind(key)
                .bind(&job.id)
                .execute()
                .await?;
            if moved == 1 {
                insert_job(&mut tx, job).await?;
                let queued = EventFields::state(JobState::Queued, "queued", 0, None);
                insert_event(&mut tx, &job.id, &queued).await?;
                started += 1;
            }
        }
        tx.commit().await?;
        Ok(started)
    }

    async fn rendered_items(&self, limit: i64) -> Result<Vec<RenderedItem>> {
        static RENDERED: Sql = Sql::new(&[
            "SELECT ",
            ITEM_COLS,
            ", j.state AS job_state, j.error AS job_error \
             FROM burst_items b JOIN render_jobs j ON j.id = b.job_id \
             WHERE b.state = 'rendering' AND j.state IN ('succeeded', 'failed', 'cancelled') \
             ORDER BY b.updated_at LIMIT $1",
        ]);
        self.db
            .query(&RENDERED)
            .bind(limit)
            .fetch_all_as(|r| {
                let job_state: String = r.try_get("job_state")?;
                Ok(RenderedItem {
                    item: item_row(r)?,
                    job_state: JobState::parse(&job_state)
                        .ok_or(StoreError::Corrupt("render_jobs.state"))?,
                    job_error: parse_error(r.try_get("job_error")?)?,
                })
            })
            .await
    }

    async fn settle_burst_item(
        &self,
        occurrence_id: &str,
        row_key: &str,
        state: BurstItemState,
        mails: &[NewMail],
        error: Option<&str>,
        fence: &Fence,
    ) -> Result<bool> {
        let mut tx = self.db.begin_write().await?;
        if !fenced(&mut tx, fence).await? {
            return Ok(false);
        }
        static SETTLE: Sql = Sql::new(&[
            "UPDATE burst_items SET state = $3, error = $4, updated_at = {now} \
             WHERE occurrence_id = $1 AND row_key = $2 AND state = 'rendering'",
        ]);
        let moved = tx
            .query(&SETTLE)
            .bind(occurrence_id)
            .bind(row_key)
            .bind(state.as_str())
            .bind(error)
            .execute()
            .await?;
        if moved != 1 {
            return Ok(false);
        }
        insert_mails(&mut tx, mails).await?;
        follow_items(&mut tx, occurrence_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn review_burst_items(
        &self,
        occurrence_id: &str,
        row_key: Option<&str>,
        approve: bool,
        by: &str,
        mails: &[(String, Vec<NewMail>)],
    ) -> Result<usize> {
        let mut tx = self.db.begin_write().await?;
        let state = if approve {
            BurstItemState::Mailed
        } else {
            BurstItemState::Rejected
        };
        static REVIEW: Sql = Sql::new(&["UPDATE burst_items SET state = $3, updated_at = {now} \
             WHERE occurrence_id = $1 AND ($2 = '' OR row_key = $2) AND state = 'held' \
             RETURNING row_key"]);
        let reviewed = tx
            .query(&REVIEW)
            .bind(occurrence_id)
            .bind(row_key.unwrap_or(""))
            .bind(state.as_str())
            .fetch_all()
            .await?;
        for r in &reviewed {
            let key: String = r.try_get(0)?;
            if approve && let Some((_, m)) = mails.iter().find(|(k, _)| *k == key) {
                insert_mails(&mut tx, m).await?;
            }
        }
        static REVIEWER: Sql = Sql::new(&[
            "UPDATE occurrences SET reviewed_by = $2, reviewed_at = {now} WHERE id = $1",
        ]);
        if !reviewed.is_empty() {
            tx.query(&REVIEWER)
                .bind(occurrence_id)
                .bind(by)
                .execute()
                .await?;
            follow_items(&mut tx, occurrence_id).await?;
        }
        tx.commit().await?;
        Ok(reviewed.len())
    }
}
