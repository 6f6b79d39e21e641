//! Whether the supervised nats-server is healthy, as its `/healthz` says. Polled in the
//! background and published on a watch channel, so the supervisor can wait for the first healthy
//! answer (then `READY=1`) and the systemd watchdog can ask at any time.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::monitor::Monitor;
use crate::lifecycle::Shutdown;

/// Polls quickly after a healthy answer went missing, so readiness is noticed at once, then
/// slower and slower up to the healthy pace: nats-server logs a warning for every failed
/// `/healthz`, and a node without JetStream quorum may fail it for a long time.
const POLL_FIRST_RETRY: Duration = Duration::from_millis(100);
const POLL_HEALTHY: Duration = Duration::from_secs(1);

pub struct Health {
    state: watch::Sender<bool>,
    poller: JoinHandle<()>,
}

impl Health {
    /// Starts polling `monitor` until drain begins; the state is unhealthy until the first 200
    /// from `/healthz`.
    pub fn spawn(monitor: Monitor, shutdown: Shutdown) -> Health {
        let state = watch::Sender::new(false);
        let poller = tokio::spawn(poll(monitor, state.clone(), shutdown));
        Health { state, poller }
    }

    /// A receiver for health changes (and for the watchdog's question).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }

    /// The child is gone: unhealthy now rather than at the next poll.
    pub fn mark_down(&self) {
        self.state.send_replace(false);
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// Stops at drain: lame-duck mode fails `/healthz` on purpose, and every failed probe would
/// add a warning to nats-server's log.
async fn poll(monitor: Monitor, state: watch::Sender<bool>, shutdown: Shutdown) {
    let mut retry = POLL_FIRST_RETRY;
    while !shutdown.is_draining() {
        let healthy = monitor.healthz().await.is_ok();
        state.send_if_modified(|s| std::mem::replace(s, healthy) != healthy);
        let pause = if healthy {
            retry = POLL_FIRST_RETRY;
            POLL_HEALTHY
        } else {
            let pause = retry;
            retry = (retry * 2).min(POLL_HEALTHY);
            pause
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.draining() => {}
        }
    }
}
