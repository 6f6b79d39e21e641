//! Claiming and running one job at a time per render slot.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Inner, Running, StopReason};
use crate::app::cluster::Availability;
use crate::app::model::{Job, JobError, Outcome, Progress, QuerySpec, millis};
use crate::app::render::{Artifact, Format, RenderError, RenderJob, Rendered, Slot, Stage};
use crate::app::templates::queries::{self, Context};
use crate::app::templates::{self, params};
use crate::connector::table::Overflow;
use crate::lifecycle::Shutdown;

pub(super) async fn claim_loop(inner: Arc<Inner>, availability: Availability, shutdown: Shutdown) {
    let lease_ms = millis(inner.settings.claim_lease);
    loop {
        if shutdown.is_draining() {
            return;
        }
        if !availability.is_open() {
            // Drained by an admin: claim nothing until resumed.
            tokio::select! {
                _ = availability.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.draining() => return,
            }
            continue;
        }
        let slot = tokio::select! {
            slot = inner.pool.acquire() => slot,
            _ = availability.changed() => continue,
            _ = shutdown.draining() => return,
        };
        if shutdown.is_draining() || !availability.is_open() {
            continue;
        }
        let token = uuid::Uuid::new_v4().to_string();
        let claimed = match inner.queries.reach().await {
            Ok(reach) => {
                inner
                    .store
                    .claim(&inner.instance, &token, lease_ms, reach.as_deref())
                    .await
            }
            Err(e) => Err(e),
        };
        match claimed {
            Ok(Some((job, event))) => {
                inner.bus.publish(event);
                let abort = CancellationToken::new();
                let why = Arc::new(OnceLock::new());
                inner.lock_running().insert(
                    job.id.clone(),
                    Running {
                        token: token.clone(),
                        abort: abort.clone(),
                        why: why.clone(),
                    },
                );
                let span = tracing::info_span!("job", id = %job.id, template = %job.template_name);
                tokio::spawn(run(inner.clone(), slot, job, token, abort, why).instrument(span));
            }
            Ok(None) => {
                drop(slot);
                tokio::select! {
                    _ = inner.bus.workers_woken() => {}
                    _ = tokio::time::sleep(inner.settings.poll) => {}
                    _ = shutdown.draining() => return,
                }
            }
            Err(e) => {
                drop(slot);
                tracing::warn!(error = %e, "could not claim a job; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.draining() => return,
                }
            }
        }
    }
}

/// Runs a claimed job to its end, whatever happens, and forgets it.
async fn run(
    inner: Arc<Inner>,
    slot: Slot,
    job: Job,
    token: String,
    abort: CancellationToken,
    why: Arc<OnceLock<StopReason>>,
) {
    let renew = tokio::spawn(renew_claim(
        inner.clone(),
        job.id.clone(),
        token.clone(),
        abort.clone(),
        why.clone(),
    ));
    let started = Instant::now();
    let result = render(&inner, &slot, &job, &token, &abort).await;
    drop(slot);
    renew.abort();
    let ending = match result {
        Ok(rendered) => {
            report(
                &inner,
                &job,
                &token,
                "storing",
                90,
                None,
                Some(rendered.pages as i64),
            )
            .await;
            match rendered.artifact {
                Artifact::Pdf(pdf) => Ending::Finish(Outcome::Succeeded {
                    pdf,
                    pages: rendered.pages as i64,
                }),
                Artifact::Svg(_) => Ending::Finish(Outcome::Failed(job_error(
                    "invalid",
                    "a job produced no PDF",
                ))),
            }
        }
        // A database blip is not the job's fault: it goes back to the queue, attempts unchanged.
        Err(Stop::Unavailable(why)) => Ending::HandBack(format!("database unavailable: {why}")),
        Err(Stop::Render(RenderError::Cancelled)) => match why.get() {
            Some(StopReason::Shutdown) => Ending::HandBack("instance shutting down".to_owned()),
            _ => Ending::Cancelled,
        },
        Err(Stop::Render(e)) => Ending::Finish(Outcome::Failed(JobError {
            kind: e.kind().to_owned(),
            message: e.to_string(),
            diagnostics: e.diagnostics().to_vec(),
        })),
        Err(Stop::Query(f)) => {
            tracing::warn!(query = %f.query, datasource = %f.datasource, error = %f.error, "a query failed");
            Ending::Finish(Outcome::Failed(job_error("query", &f.to_string())))
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    match ending {
        Ending::Finish(outcome) => {
            let label = match &outcome {
                Outcome::Succeeded { .. } => "succeeded",
                Outcome::Failed(e) => kind_label(&e.kind),
            };
            inner.metrics.render_finished("job", label, elapsed);
            finish(&inner, &job, &token, outcome).await;
        }
        Ending::HandBack(reason) => match inner.store.release(&job.id, &token, &reason).await {
            Ok(Some(ev)) => {
                tracing::info!(job = %job.id, reason = %reason, "handed back to the queue");
                inner.bus.publish(ev);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "could not hand the job back; its claim will lapse")
            }
        },
        Ending::Cancelled => inner.metrics.render_finished("job", "cancelled", elapsed),
    }
    {
        let mut running = inner.lock_running();
        if running.get(&job.id).is_some_and(|r| r.token == token) {
            running.remove(&job.id);
        }
    }
    inner.finished.notify_waiters();
}

async fn render(
    inner: &Inner,
    slot: &Slot,
    job: &Job,
    token: &str,
    abort: &CancellationToken,
) -> Result<Rendered, Stop> {
    report(inner, job, token, "fetching data", 10, None, None).await;
    let Prepared {
        job: mut render_job,
        queries,
        context,
    } = prepare(inner, job).await?;
    if !queries.is_empty() {
        let count = format!("{} queries", queries.len());
        report(inner, job, token, "querying", 12, Some(count), None).await;
        let fetched = inner
            .queries
            .fetch(
                &queries,
                &render_job.inputs,
                &context,
                Overflow::Fail,
                &job.template_name,
            )
            .await
            .map_err(Stop::Query)?;
        let summary = queries::summary(&fetched.reports);
        report(inner, job, token, "querying", 18, Some(summary), None).await;
        render_job.files.extend(fetched.files);
    }
    context.inputs_into(&mut render_job.inputs);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Stage>();
    let progress = async {
        while let Some(stage) = rx.recv().await {
            let (name, pct, msg, pages) = match stage {
                Stage::Compiling => ("compiling", 20, None, None),
                Stage::Writing { pages } => (
                    "writing PDF",
                    70,
                    Some(format!("{pages} pages laid out")),
                    Some(pages as i64),
                ),
            };
            report(inner, job, token, name, pct, msg, pages).await;
        }
    };
    let rendering = async {
        let r = slot.render(&render_job, abort, |s| {
            let _ = tx.send(s);
        });
        let out = r.await;
        drop(tx);
        out
    };
    // Progress is written while the worker renders, and all of it before the final event.
    let (result, ()) = tokio::join!(rendering, progress);
    result.map_err(Stop::Render)
}

/// Why a run did not produce a PDF.
enum Stop {
    /// The render (or its inputs) failed; the job fails with this.
    Render(RenderError),
    /// A query failed; the job fails naming it and its data source.
    Query(queries::Failure),
    /// The database could not be read; the job goes back to the queue.
    Unavailable(String),
}

/// How a run ends.
enum Ending {
    Finish(Outcome),
    /// Back to the queue, attempts unchanged.
    HandBack(String),
    /// Cancelled by a user or taken over by another instance: nothing to record.
    Cancelled,
}

/// A claimed job made ready: the render without its query files, the queries, the built-ins.
struct Prepared {
    job: RenderJob,
    queries: Vec<QuerySpec>,
    context: Context,
}

/// Loads the job's template version and checks its parameters again (the template may have
/// been deleted since the job was queued).
async fn prepare(inner: &Inner, job: &Job) -> Result<Prepared, Stop> {
    let unavailable = |e: crate::app::store::StoreError| Stop::Unavailable(e.to_string());
    let version = inner
        .store
        .version(&job.template_id, job.template_version)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            Stop::Render(RenderError::Invalid(format!(
                "template {} version {} no longer exists",
                job.template_name, job.template_version
            )))
        })?;
    let files = inner
        .cache
        .get(inner.store.as_ref(), &job.template_id, job.template_version)
        .await
        .map_err(unavailable)?;
    let mut given: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&job.parameters).unwrap_or_default();
    let context = Context::take_from(&mut given);
    let inputs = params::resolve(&version.parameters, &given)
        .map_err(|e| Stop::Render(RenderError::Invalid(e.to_string())))?
        .inputs;
    Ok(Prepared {
        job: templates::job(
            &version,
            &files,
            job.data.clone().into_bytes(),
            inputs,
            Format::Pdf,
        ),
        queries: version.queries,
        context,
    })
}

/// Records and announces progress; a lost claim means someone else owns the job now.
#[allow(clippy::too_many_arguments)]
async fn report(
    inner: &Inner,
    job: &Job,
    token: &str,
    stage: &str,
    progress: i64,
    message: Option<String>,
    pages: Option<i64>,
) {
    let p = Progress {
        stage: stage.to_owned(),
        progress,
        message,
        pages,
    };
    match inner.store.progress(&job.id, token, &p).await {
        Ok(Some(ev)) => inner.bus.publish(ev),
        Ok(None) => {}
        Err(e) => tracing::warn!(job = %job.id, error = %e, "could not record progress"),
    }
}

/// Completes the job, retrying while the database is briefly unavailable: the PDF is done and
/// worth keeping.
async fn finish(inner: &Inner, job: &Job, token: &str, outcome: Outcome) {
    let retention = inner.settings.retention_ms();
    for attempt in 1..=5u32 {
        match inner
            .store
            .finish(&job.id, token, &outcome, retention)
            .await
        {
            Ok(Some(ev)) => {
                inner.bus.publish(ev);
                return;
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job = %job.id, attempt, error = %e, "could not complete the job");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
    }
}

/// Keeps the claim alive; if it is lost (the janitor took the job back), stop rendering.
async fn renew_claim(
    inner: Arc<Inner>,
    job_id: String,
    token: String,
    abort: CancellationToken,
    why: Arc<OnceLock<StopReason>>,
) {
    let lease = inner.settings.claim_lease;
    let lease_ms = millis(lease);
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        match inner.store.renew_claim(&job_id, &token, lease_ms).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = why.set(StopReason::ClaimLost);
                abort.cancel();
                return;
            }
            Err(e) => tracing::warn!(job = %job_id, error = %e, "could not renew the claim"),
        }
    }
}

fn job_error(kind: &str, message: &str) -> JobError {
    JobError {
        kind: kind.to_owned(),
        message: message.to_owned(),
        diagnostics: Vec::new(),
    }
}

/// Metric labels must be static; unknown kinds collapse into `error`.
fn kind_label(kind: &str) -> &'static str {
    [
        "compile",
        "invalid",
        "timeout",
        "memory",
        "crashed",
        "unavailable",
        "query",
    ]
    .into_iter()
    .find(|k| *k == kind)
    .unwrap_or("error")
}
