//! The server side of the render workers: a fixed number of slots, each backed by a long-lived
//! worker process that is reused across renders (fonts loaded once, compiler caches warm) and
//! replaced when it is killed for a limit, crashes, or has served its share of renders.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::protocol::{self, Reply};
use super::{RenderError, RenderJob, Rendered, Stage};
use crate::config::ByteSize;

/// A worker is replaced after this many renders, which bounds what a long-lived compiler process
/// accumulates (interned file ids, allocator fragmentation).
const RENDERS_PER_WORKER: u64 = 5000;
/// Lines of a worker's stderr kept to explain its death.
const STDERR_TAIL: usize = 20;

#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The executable to start as `render-worker` (normally `/proc/self/exe`).
    pub exe: PathBuf,
    pub workers: usize,
    pub fonts_dir: PathBuf,
    pub memory_limit: ByteSize,
    pub timeout: Duration,
    /// Synchronous renders allowed to wait for a slot.
    pub sync_queue_limit: usize,
}

/// Every synchronous slot is taken and the wait list is full.
#[derive(Debug, thiserror::Error)]
#[error("all render workers are busy and {0} requests are already waiting")]
pub struct SyncQueueFull(pub usize);

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub spawned: AtomicU64,
    pub killed: AtomicU64,
}

#[derive(Clone)]
pub struct RenderPool {
    inner: Arc<Inner>,
}

struct Inner {
    opts: PoolOptions,
    permits: Arc<Semaphore>,
    /// Slots withheld from use (the licence's free tier runs one): the permits, once taken,
    /// and the task taking them (it waits for running renders to finish).
    withheld: Mutex<Withheld>,
    idle: Mutex<Vec<Worker>>,
    fonts_generation: AtomicU64,
    sync_waiting: AtomicUsize,
    /// Slots held by renders (withheld permits are not counted).
    in_use: AtomicUsize,
    stats: PoolStats,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    pid: u32,
    renders: u64,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl RenderPool {
    pub fn new(opts: PoolOptions) -> Self {
        let permits = Arc::new(Semaphore::new(opts.workers));
        let withheld = Mutex::new(Withheld {
            limit: opts.workers,
            permit: None,
            taking: None,
        });
        RenderPool {
            inner: Arc::new(Inner {
                opts,
                permits,
                withheld,
                idle: Mutex::new(Vec::new()),
                fonts_generation: AtomicU64::new(1),
                sync_waiting: AtomicUsize::new(0),
                in_use: AtomicUsize::new(0),
                stats: PoolStats::default(),
            }),
        }
    }

    /// Starts every worker up front so the first renders do not pay for process start and font
    /// loading.
    pub async fn warm(&self) -> Result<(), RenderError> {
        let mut started = Vec::new();
        for _ in 0..self.inner.opts.workers {
            started.push(self.inner.spawn()?);
        }
        self.inner.idle().extend(started);
        Ok(())
    }

    /// Waits for a free slot (used by the job runner, which only claims a job once it has one).
    pub async fn acquire(&self) -> Slot {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        Slot::new(permit, &self.inner)
    }

    /// A slot for a synchronous render, waiting only if fewer than `sync_queue_limit` others wait.
    pub async fn acquire_sync(&self) -> Result<Slot, SyncQueueFull> {
        if let Ok(permit) = self.inner.permits.clone().try_acquire_owned() {
            return Ok(Slot::new(permit, &self.inner));
        }
        let limit = self.inner.opts.sync_queue_limit;
        let waiting = self.inner.sync_waiting.fetch_add(1, Ordering::SeqCst);
        let _guard = WaitGuard(&self.inner.sync_waiting);
        if waiting >= limit {
            return Err(SyncQueueFull(waiting));
        }
        Ok(self.acquire().await)
    }

    /// Slots in use by renders.
    pub fn busy(&self) -> usize {
        self.inner.in_use.load(Ordering::SeqCst)
    }

    /// Slots renders may use now.
    pub fn size(&self) -> usize {
        self.inner.withheld().limit
    }

    /// Lets renders use at most `limit` slots (at least one, at most every worker). Slots in use
    /// finish their render first; the workers behind withheld slots stay warm.
    pub fn set_limit(&self, limit: usize) {
        let limit = limit.clamp(1, self.inner.opts.workers);
        let mut w = self.inner.withheld();
        if w.limit == limit {
            return;
        }
        w.limit = limit;
        // Give back what was withheld (or stop waiting for it), then withhold anew.
        w.permit = None;
        if let Some(task) = w.taking.take() {
            task.abort();
        }
        let n = self.inner.opts.workers - limit;
        if n == 0 {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        let permits = self.inner.permits.clone();
        w.taking = Some(tokio::spawn(async move {
            let Ok(permit) = permits.acquire_many_owned(n as u32).await else {
                return;
            };
            if let Some(inner) = inner.upgrade() {
                let mut w = inner.withheld();
                if w.limit + n == inner.opts.workers {
                    w.permit = Some(permit);
                }
            }
        }));
    }

    pub fn stats(&self) -> &PoolStats {
        &self.inner.stats
    }

    /// The font directory changed: every worker reloads its fonts before its next render.
    pub fn fonts_changed(&self) {
        self.inner.fonts_generation.fetch_add(1, Ordering::SeqCst);
    }
}

struct Withheld {
    limit: usize,
    permit: Option<OwnedSemaphorePermit>,
    taking: Option<tokio::task::JoinHandle<()>>,
}

impl Inner {
    fn withheld(&self) -> std::sync::MutexGuard<'_, Withheld> {
        self.withheld.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct WaitGuard<'a>(&'a AtomicUsize);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The right to run one render; the slot is free again when this is dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    inner: Arc<Inner>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.in_use.fetch_sub(1, Ordering::SeqCst);
    }
}

enum Exchange {
    Finished(std::io::Result<Result<Rendered, RenderError>>),
    TimedOut,
    Cancelled,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, inner: &Arc<Inner>) -> Slot {
        inner.in_use.fetch_add(1, Ordering::SeqCst);
        Slot {
            _permit: permit,
            inner: inner.clone(),
        }
    }

    /// Runs `job` on a worker, reporting stages, within the pool's time limit. A worker that runs
    /// out of time, is cancelled, or dies is killed and replaced; the error says which.
    pub async fn render(
        &self,
        job: &RenderJob,
        cancel: &CancellationToken,
        mut on_stage: impl FnMut(Stage),
    ) -> Result<Rendered, RenderError> {
        let generation = self.inner.fonts_generation.load(Ordering::SeqCst);
        let (req, blob) = protocol::encode_job(job, generation);
        let (mut worker, mut reused) = match self.inner.take_idle() {
            Some(w) => (w, true),
            None => (self.inner.spawn()?, false),
        };
        loop {
            let (outcome, replied) = self
                .exchange(&mut worker, &req, &blob, cancel, &mut on_stage)
                .await;
            match outcome {
                Exchange::Finished(Ok(result)) => {
                    worker.renders += 1;
                    if worker.renders < RENDERS_PER_WORKER {
                        self.inner.idle().push(worker);
                    }
                    return result;
                }
                // An idle worker that died while waiting (killed from outside) never saw the
                // request: give it to a fresh one instead of failing the render.
                Exchange::Finished(Err(_)) if reused && !replied => {
                    let why = self.inner.death_reason(worker).await;
                    tracing::warn!(error = %why, "an idle render worker was gone; retrying on a new one");
                    worker = self.inner.spawn()?;
                    reused = false;
                }
                Exchange::Finished(Err(_)) => return Err(self.inner.death_reason(worker).await),
                Exchange::TimedOut => {
                    self.inner.kill(worker, "time limit").await;
                    return Err(RenderError::Timeout(
                        crate::config::Span(self.inner.opts.timeout).to_string(),
                    ));
                }
                Exchange::Cancelled => {
                    self.inner.kill(worker, "cancelled").await;
                    return Err(RenderError::Cancelled);
                }
            }
        }
    }

    /// One request to one worker, within the time limit; also says whether the worker answered
    /// at all.
    async fn exchange(
        &self,
        worker: &mut Worker,
        req: &protocol::Request,
        blob: &[u8],
        cancel: &CancellationToken,
        on_stage: &mut impl FnMut(Stage),
    ) -> (Exchange, bool) {
        let mut replied = false;
        let outcome = {
            let talk = async {
                protocol::send(&mut worker.stdin, req, blob).await?;
                loop {
                    let (reply, blob): (Reply, Vec<u8>) =
                        protocol::recv(&mut worker.stdout).await?;
                    replied = true;
                    match reply {
                        Reply::Stage(s) => on_stage(s),
                        Reply::Done {
                            pages,
                            warnings,
                            svg,
                        } => {
                            return Ok(Ok(protocol::decode_done(pages, warnings, svg, blob)));
                        }
                        Reply::Failed(e) => return Ok(Err(e)),
                    }
                }
            };
            tokio::select! {
                r = talk => Exchange::Finished(r),
                _ = tokio::time::sleep(self.inner.opts.timeout) => Exchange::TimedOut,
                _ = cancel.cancelled() => Exchange::Cancelled,
            }
        };
        (outcome, replied)
    }
}

impl Inner {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_idle(&self) -> Option<Worker> {
        self.idle().pop()
    }

    fn spawn(&self) -> Result<Worker, RenderError> {
        let mut cmd = Command::new(&self.opts.exe);
        cmd.arg0("quire-render-worker")
            .arg("render-worker")
            .arg("--fonts-dir")
            .arg(&self.opts.fonts_dir)
            .arg("--memory-limit")
            .arg(self.opts.memory_limit.bytes().to_string())
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .arg("--fonts-generation")
            .arg(self.fonts_generation.load(Ordering::SeqCst).to_string())
            // Template code cannot read the environment, but the worker has no need for the
            // server's secrets either.
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| RenderError::Unavailable(e.to_string()))?;
        let pid = child.id().unwrap_or_default();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(RenderError::Unavailable("worker pipes missing".into()));
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(relay_stderr(stderr, pid, tail.clone()));
        self.stats.spawned.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(worker_pid = pid, "render worker started");
        Ok(Worker {
            child,
            stdin,
            stdout,
            pid,
            renders: 0,
            tail,
        })
    }

    async fn kill(&self, mut worker: Worker, why: &str) {
        self.stats.killed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            worker_pid = worker.pid,
            reason = why,
            "killing render worker"
        );
        let _ = worker.child.kill().await;
    }

    /// Explains why a worker stopped answering mid-render.
    async fn death_reason(&self, mut worker: Worker) -> RenderError {
        self.stats.killed.fetch_add(1, Ordering::Relaxed);
        let status = match tokio::time::timeout(Duration::from_secs(2), worker.child.wait()).await {
            Ok(Ok(status)) => status,
            _ => {
                let _ = worker.child.kill().await;
                return RenderError::Crashed("the worker stopped answering".into());
            }
        };
        // Let the stderr relay catch the last lines.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let tail: Vec<String> = worker
            .tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let out_of_memory = tail
            .iter()
            .any(|l| l.contains("memory allocation of") || l.contains("out of memory"));
        if out_of_memory {
            return RenderError::Memory(self.opts.memory_limit.to_string());
        }
        use std::os::unix::process::ExitStatusExt;
        let how = match status.signal() {
            Some(9) => "killed (SIGKILL, possibly by the kernel's out-of-memory killer)".to_owned(),
            Some(sig) => format!("terminated by signal {sig}"),
            None => format!("exited with {status}"),
        };
        let last = tail
            .last()
            .map(|l| format!("; last message: {l}"))
            .unwrap_or_default();
        tracing::warn!(worker_pid = worker.pid, "render worker died: {how}{last}");
        RenderError::Crashed(format!("{how}{last}"))
    }
}

async fn relay_stderr(
    stderr: tokio::process::ChildStderr,
    pid: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(worker_pid = pid, "render worker: {line}");
        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == STDERR_TAIL {
            t.pop_front();
        }
        t.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(workers: usize) -> RenderPool {
        RenderPool::new(PoolOptions {
            exe: "/nonexistent".into(),
            workers,
            fonts_dir: "/nonexistent".into(),
            memory_limit: ByteSize::mib(256),
            timeout: Duration::from_secs(1),
            sync_queue_limit: 0,
        })
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_limit_withholds_slots_once_running_renders_finish_and_lifting_it_returns_them() {
        let p = pool(3);
        let a = p.acquire().await;
        let b = p.acquire().await;
        p.set_limit(1);
        assert_eq!(p.size(), 1);
        settle().await;
        // Two renders still run: the limit waits for them rather than cutting them off.
        assert_eq!(p.busy(), 2);
        drop(a);
        drop(b);
        settle().await;
        assert_eq!(p.busy(), 0);
        let one = p.acquire_sync().await.expect("one slot is free");
        assert!(
            p.acquire_sync().await.is_err(),
            "a second synchronous render finds no slot and no room to wait"
        );
        drop(one);
        p.set_limit(usize::MAX);
        assert_eq!(p.size(), 3);
        let _all = [p.acquire().await, p.acquire().await, p.acquire().await];
        assert_eq!(p.busy(), 3);
    }

    #[tokio::test]
    async fn a_limit_never_goes_below_one_slot() {
        let p = pool(2);
        p.set_limit(0);
        assert_eq!(p.size(), 1);
        settle().await;
        let _slot = p.acquire().await;
    }
}
