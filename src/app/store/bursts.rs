//! Bursts: one report per row of a schedule's burst query. Each row of an occurrence is a burst
//! item, unique per (occurrence, row key); items are written, started and settled under the
//! scheduler's fence, each in one transaction with the jobs and mails it creates.

use async_trait::async_trait;

use super::Result;
use crate::app::model::{
    BurstCounts, BurstItem, BurstItemState, Fence, NewBurstItem, NewJob, NewMail, Occurrence,
    RenderedItem, Schedule,
};

#[async_trait]
pub trait BurstStore: Send + Sync {
    /// Occurrences in `bursting` with their schedules, oldest first.
    async fn bursting_occurrences(&self, limit: i64) -> Result<Vec<(Occurrence, Schedule)>>;
    /// Records the rows of a burst (items with an error are recorded failed), or fails the
    /// occurrence with `error`; false when its rows were recorded already or the fence is gone.
    async fn expand_burst(
        &self,
        occurrence_id: &str,
        items: &[NewBurstItem],
        error: Option<&str>,
        fence: &Fence,
    ) -> Result<bool>;
    /// How many rows of a burst are in each state.
    async fn burst_counts(&self, occurrence_id: &str) -> Result<BurstCounts>;
    /// A burst's rows in a state (all when `None`), in query order.
    async fn burst_items(
        &self,
        occurrence_id: &str,
        state: Option<BurstItemState>,
        limit: i64,
    ) -> Result<Vec<BurstItem>>;
    /// Starts pending rows with their jobs; rows started already are left alone. The number
    /// started, 0 when the fence is gone.
    async fn start_burst_items(
        &self,
        occurrence_id: &str,
        starts: &[(String, NewJob)],
        fence: &Fence,
    ) -> Result<usize>;
    /// Rows in `rendering` whose job finished.
    async fn rendered_items(&self, limit: i64) -> Result<Vec<RenderedItem>>;
    /// Moves a rendered row on (held, mailed with `mails`, or failed) and its occurrence with
    /// it; false when it moved already or the fence is gone.
    async fn settle_burst_item(
        &self,
        occurrence_id: &str,
        row_key: &str,
        state: BurstItemState,
        mails: &[NewMail],
        error: Option<&str>,
        fence: &Fence,
    ) -> Result<bool>;
    /// Approves (queueing `mails`, by row key) or rejects held rows: one (`row_key`) or all.
    /// The number of rows reviewed.
    async fn review_burst_items(
        &self,
        occurrence_id: &str,
        row_key: Option<&str>,
        approve: bool,
        by: &str,
        mails: &[(String, Vec<NewMail>)],
    ) -> Result<usize>;
}
