//! Render jobs: the queue, claims by runners, progress events, outcomes and the stored PDFs.

use async_trait::async_trait;

use super::Result;
use crate::app::model::{Job, JobEvent, JobFilter, NewJob, Outcome, Progress};

/// Which jobs `requeue_abandoned` takes back.
#[derive(Debug, Clone)]
pub enum Abandoned {
    /// Every running job: at the start of a single instance, none can be running anywhere.
    All,
    /// Jobs whose claim lease ran out (their instance stopped renewing), or whose instance has
    /// sent no heartbeat for `stale_ms`.
    Expired { stale_ms: i64 },
}

/// Jobs, their progress events and outputs. Every change of a job's state writes the event that
/// describes it in the same transaction; changes under a claim hold only while its token does.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Queues a job (its first event included), refusing when `queue_limit` jobs already wait.
    async fn enqueue(&self, job: &NewJob, queue_limit: i64) -> Result<(Job, JobEvent)>;
    async fn job(&self, id: &str) -> Result<Option<Job>>;
    /// Newest first, without data and parameters.
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;
    /// How many jobs wait in the queue.
    async fn queue_depth(&self) -> Result<i64>;
    /// Takes the oldest queued job for `instance`, marking it running under `token` with a
    /// claim lease of `lease_ms` on the database clock. With `reach` (the agent-served sources
    /// the instance can reach, as `agents::reach::Reach` writes them), only a job whose
    /// `agent_sources` pattern matches it, or that needs no agent, is taken.
    async fn claim(
        &self,
        instance: &str,
        token: &str,
        lease_ms: i64,
        reach: Option<&str>,
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
    /// The PDF of a succeeded job.
    async fn output(&self, job_id: &str) -> Result<Option<Vec<u8>>>;
    /// Deletes finished jobs (and their outputs and events) past their retention, and expired
    /// sessions; answers the number of jobs deleted.
    async fn purge_expired(&self) -> Result<u64>;
    /// A job's events with a sequence number above `after_seq`, in order.
    async fn events_after(&self, job_id: &str, after_seq: i64) -> Result<Vec<JobEvent>>;
}
