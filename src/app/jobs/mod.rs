//! Render jobs on this instance: a runner that claims queued jobs whenever a render slot is free,
//! runs them with progress events, renews their claims while they run, and on shutdown lets them
//! finish within a bound before handing the rest back to the queue. A janitor purges expired
//! jobs and takes back jobs whose claim lapsed.

mod follow;
mod runner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::bus::Bus;
use super::cluster::Availability;
use super::metrics::Metrics;
use super::model::QuerySpec;
use super::model::{Job, NewJob, millis};
use super::render::Format;
use super::render::{RenderError, RenderJob, RenderPool, Rendered, SyncQueueFull};
use super::store::{Abandoned, Store, StoreError};
use super::templates::FileCache;
use super::templates::queries::{Context, Failure, QueryRunner};
use crate::connector::table::Overflow;
use crate::lifecycle::{Shutdown, within};

/// Timing of claims and housekeeping.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// A running job's claim lasts this long unless renewed (renewed every third of it).
    pub claim_lease: Duration,
    /// How long finished jobs and outputs are kept.
    pub retention: Duration,
    pub max_attempts: u32,
    /// Runners re-check the queue this often even without a wake-up.
    pub poll: Duration,
    /// An instance silent this long is gone; its running jobs go back to the queue.
    pub stale_after: Duration,
}

impl JobSettings {
    fn retention_ms(&self) -> i64 {
        millis(self.retention)
    }
}

/// Why a render asked for now did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RenderNowError {
    /// Too many renders already wait for a worker.
    #[error(transparent)]
    Busy(#[from] SyncQueueFull),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Query(#[from] Failure),
}

/// Why a running render was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// Cancelled by a user; the job row already says so.
    User,
    /// The instance is shutting down; the job goes back to the queue.
    Shutdown,
    /// The claim was lost (taken back by a janitor); someone else owns the job now.
    ClaimLost,
}

struct Running {
    /// The claim this run holds; a later claim of the same job replaces the entry.
    token: String,
    abort: CancellationToken,
    why: Arc<OnceLock<StopReason>>,
}

#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    pool: RenderPool,
    bus: Bus,
    cache: Arc<FileCache>,
    queries: QueryRunner,
    metrics: Arc<Metrics>,
    instance: String,
    settings: JobSettings,
    running: Mutex<HashMap<String, Running>>,
    /// Signalled whenever a job stops running here.
    finished: Notify,
}

impl Jobs {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        pool: RenderPool,
        bus: Bus,
        cache: Arc<FileCache>,
        queries: QueryRunner,
        metrics: Arc<Metrics>,
        instance: String,
        settings: JobSettings,
    ) -> Self {
        Jobs {
            inner: Arc::new(Inner {
                store,
                pool,
                bus,
                cache,
                queries,
                metrics,
                instance,
                settings,
                running: Mutex::new(HashMap::new()),
                finished: Notify::new(),
            }),
        }
    }

    /// At the start of a single instance every running job was abandoned by the previous
    /// process (killed, crashed, or stopped past its drain bound): take them all back now.
    pub async fn recover_abandoned(&self) -> Result<usize, StoreError> {
        let events = self
            .inner
            .store
            .requeue_abandoned(
                Abandoned::All,
                self.inner.settings.max_attempts.into(),
                self.inner.settings.retention_ms(),
            )
            .await?;
        Ok(self.inner.announce_requeued(events))
    }

    /// Queues a render of a version with `queries`: the job and its first event are stored
    /// together, then announced (for followers) and the runners woken. `queue_limit` queued
    /// jobs at most.
    pub async fn enqueue(
        &self,
        mut job: NewJob,
        queries: &[QuerySpec],
        queue_limit: i64,
    ) -> Result<Job, StoreError> {
        job.agent_sources = self.inner.queries.agent_sources(queries).await?;
        let (job, event) = self.inner.store.enqueue(&job, queue_limit).await?;
        self.inner.bus.publish(event);
        self.inner.bus.wake_workers();
        Ok(job)
    }

    /// Renders right away in a worker, waiting in a bounded line for a free one, for answers
    /// that carry the result itself (the synchronous API and the editor's preview). `kind`
    /// labels the metrics; `origin` (the template) names the render to an agent's log.
    pub async fn render_now(
        &self,
        kind: &'static str,
        mut job: RenderJob,
        queries: &[QuerySpec],
        context: &Context,
        origin: &str,
    ) -> Result<Rendered, RenderNowError> {
        if !queries.is_empty() {
            // Previews show what they can; a PDF never silently misses rows.
            let overflow = match job.format {
                Format::Svg { .. } => Overflow::Truncate,
                Format::Pdf => Overflow::Fail,
            };
            let fetched = self
                .inner
                .queries
                .fetch(queries, &job.inputs, context, overflow, origin)
                .await?;
            job.files.extend(fetched.files);
        }
        context.inputs_into(&mut job.inputs);
        let job = &job;
        let slot = self.inner.pool.acquire_sync().await?;
        let started = std::time::Instant::now();
        let result = slot.render(job, &CancellationToken::new(), |_| {}).await;
        let outcome = match &result {
            Ok(_) => "succeeded",
            Err(e) => e.kind(),
        };
        self.inner
            .metrics
            .render_finished(kind, outcome, started.elapsed().as_secs_f64());
        Ok(result?)
    }

    /// Claims and runs jobs while the instance takes work, until draining starts.
    pub fn spawn_runner(
        &self,
        availability: Availability,
        shutdown: Shutdown,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(runner::claim_loop(
            self.inner.clone(),
            availability,
            shutdown,
        ))
    }

    /// Purges expired jobs and takes back jobs whose claim lapsed or whose instance went silent
    /// (the janitor role's work).
    pub async fn sweep(&self) {
        self.inner.sweep().await
    }

    /// Cancels a job: marks it cancelled and, when it is running here, kills its render.
    /// `None` when there is no such job.
    pub async fn cancel(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        let Some((job, event)) = self
            .inner
            .store
            .cancel(job_id, self.inner.settings.retention_ms())
            .await?
        else {
            return Ok(None);
        };
        if let Some(ev) = event {
            self.inner.bus.publish(ev);
        }
        self.inner.stop_running(job_id, StopReason::User);
        Ok(Some(job))
    }

    pub fn running(&self) -> usize {
        self.inner.lock_running().len()
    }

    /// Waits up to `bound` for running jobs to finish, then stops the rest and hands them back
    /// to the queue. Returns how many were handed back.
    pub async fn drain(&self, shutdown: &Shutdown, bound: Duration) -> usize {
        if within(shutdown, bound, self.inner.all_finished()).await {
            return 0;
        }
        let ids: Vec<String> = self.inner.lock_running().keys().cloned().collect();
        for id in &ids {
            self.inner.stop_running(id, StopReason::Shutdown);
        }
        // Stopping is quick (kill the worker, one UPDATE); bound it anyway.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.all_finished()).await;
        ids.len()
    }
}

impl Inner {
    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop_running(&self, job_id: &str, why: StopReason) {
        if let Some(r) = self.lock_running().get(job_id) {
            let _ = r.why.set(why);
            r.abort.cancel();
        }
    }

    async fn all_finished(&self) {
        loop {
            let notified = self.finished.notified();
            if self.lock_running().is_empty() {
                return;
            }
            notified.await;
        }
    }

    fn announce_requeued(&self, events: Vec<super::model::JobEvent>) -> usize {
        let n = events.len();
        for ev in events {
            self.metrics.jobs_requeued.inc();
            self.bus.publish(ev);
        }
        if n > 0 {
            self.bus.wake_workers();
        }
        n
    }

    async fn sweep(&self) {
        match self.store.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "purged expired jobs"),
            Err(e) => tracing::warn!(error = %e, "could not purge expired jobs"),
        }
        match self
            .store
            .requeue_abandoned(
                Abandoned::Expired {
                    stale_ms: millis(self.settings.stale_after),
                },
                self.settings.max_attempts.into(),
                self.settings.retention_ms(),
            )
            .await
        {
            Ok(events) => {
                let n = self.announce_requeued(events);
                if n > 0 {
                    tracing::warn!(jobs = n, "took back jobs whose claim lapsed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not check for abandoned jobs"),
        }
    }
}
