//! Following a job's progress: read the database first, then take hints from the bus; a gap in
//! sequence numbers, a lagging subscription or a quiet interval sends a follower back to the
//! database, so a lost hint costs latency, never an event.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::Jobs;
use crate::app::model::JobEvent;
use crate::app::store::StoreError;
use crate::lifecycle::Shutdown;

/// Without hints, followers re-read the database this often.
const POLL: Duration = Duration::from_secs(2);

/// Streams the job's events after `after`, ending with the final one.
impl Jobs {
    /// Events of job `job_id` after sequence number `after`, for one look.
    pub async fn events_after(
        &self,
        job_id: &str,
        after: i64,
    ) -> Result<Vec<JobEvent>, StoreError> {
        self.inner.store.events_after(job_id, after).await
    }

    /// Streams the job's events after `after`, ending with the final one (or at stop).
    pub fn follow(
        &self,
        job_id: String,
        after: i64,
        shutdown: Shutdown,
    ) -> mpsc::Receiver<Arc<JobEvent>> {
        let inner = self.inner.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            // Subscribe before reading the database, so nothing falls between the two.
            let mut hints = inner.bus.subscribe();
            let mut last = after;
            loop {
                match inner.store.events_after(&job_id, last).await {
                    Ok(events) => {
                        for ev in events {
                            last = ev.seq;
                            let fin = ev.is_final();
                            if tx.send(Arc::new(ev)).await.is_err() || fin {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(job = %job_id, error = %e, "cannot read events; retrying")
                    }
                }
                match wait_for_hint(&mut hints, &tx, &job_id, &mut last).await {
                    Hint::Done => return,
                    Hint::CatchUp => {}
                }
                if shutdown.is_stopped() {
                    return;
                }
            }
        });
        rx
    }
}

enum Hint {
    Done,
    CatchUp,
}

/// Forwards bus events that continue the sequence; returns when the database should be read
/// (a gap, a lag, a quiet `POLL`), or when the stream is over.
async fn wait_for_hint(
    hints: &mut broadcast::Receiver<Arc<JobEvent>>,
    tx: &mpsc::Sender<Arc<JobEvent>>,
    job_id: &str,
    last: &mut i64,
) -> Hint {
    let quiet = tokio::time::sleep(POLL);
    tokio::pin!(quiet);
    loop {
        tokio::select! {
            got = hints.recv() => match got {
                Ok(ev) if ev.job_id == job_id => {
                    if ev.seq <= *last {
                        continue;
                    }
                    if ev.seq > *last + 1 {
                        return Hint::CatchUp;
                    }
                    *last = ev.seq;
                    let fin = ev.is_final();
                    if tx.send(ev).await.is_err() || fin {
                        return Hint::Done;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Hint::CatchUp,
                Err(broadcast::error::RecvError::Closed) => return Hint::Done,
            },
            _ = &mut quiet => return Hint::CatchUp,
            _ = tx.closed() => return Hint::Done,
        }
    }
}
