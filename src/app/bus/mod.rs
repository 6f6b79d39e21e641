//! Hints between the parts of the app (and, in HA mode, between instances): job progress for
//! live followers, and wake-ups for job runners. The bus is never needed for correctness —
//! every event is also in the database, and runners also poll — it only makes things prompt.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use super::model::JobEvent;

/// Events buffered per follower before it lags (and re-reads the database).
const CAPACITY: usize = 1024;

#[derive(Clone)]
pub struct Bus {
    events: broadcast::Sender<Arc<JobEvent>>,
    wake: Arc<Notify>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            events: broadcast::channel(CAPACITY).0,
            wake: Arc::new(Notify::new()),
        }
    }
}

impl Bus {
    /// Announces a job event to its followers.
    pub fn publish(&self, event: JobEvent) {
        // No followers is not an error.
        let _ = self.events.send(Arc::new(event));
    }

    /// Every job event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<JobEvent>> {
        self.events.subscribe()
    }

    /// New work was queued.
    pub fn wake_workers(&self) {
        self.wake.notify_one();
    }

    /// Resolves at the next `wake_workers`.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}
