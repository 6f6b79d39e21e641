//! Process lifecycle shared by every mode: the shutdown handle every task selects on, signal
//! handling, and what the service manager is told (ready, status, watchdog, stopping).
//!
//! Shutdown has two named phases. **Drain** (first SIGTERM or SIGINT, or an admin's drain
//! request): stop taking new work, report not-ready, let running work finish within a bound.
//! **Stop** (drain finished, its bound ran out, or a second signal): end at once; work that did not
//! finish is handed back, never dropped.

mod notify;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use notify::Notifier;

/// The two shutdown phases, cheap to clone into every task.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    drain: CancellationToken,
    stop: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Enters the drain phase (idempotent).
    pub fn begin_drain(&self) {
        self.drain.cancel();
    }

    /// Enters the stop phase; a stopped process is also draining.
    pub fn stop(&self) {
        self.drain.cancel();
        self.stop.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves when the drain phase begins.
    pub async fn draining(&self) {
        self.drain.cancelled().await
    }

    /// Resolves when the stop phase begins.
    pub async fn stopped(&self) {
        self.stop.cancelled().await
    }
}

/// What a mode receives from `main`: the shutdown handle plus the link to the service manager.
#[derive(Clone)]
pub struct Lifecycle {
    shutdown: Shutdown,
    notifier: Notifier,
    /// Services that have not reported ready yet; `READY=1` goes out when it empties.
    pending: Arc<Mutex<BTreeSet<String>>>,
}

impl Lifecycle {
    pub fn new(notifier: Notifier) -> Self {
        Lifecycle {
            shutdown: Shutdown::new(),
            notifier,
            pending: Arc::default(),
        }
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Declares the services that must report ready before the process is.
    pub fn expect(&self, services: &[&str]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend(services.iter().map(|s| s.to_string()));
    }

    /// A service is serving; once every expected one is, systemd hears `READY=1`.
    pub fn service_ready(&self, service: &str, status: &str) {
        let all_ready = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.remove(service);
            pending.is_empty()
        };
        self.notifier.status(status);
        if all_ready {
            self.notifier.ready();
        }
    }

    /// Turns SIGTERM / SIGINT into drain, a second one into stop, and tells systemd
    /// `STOPPING=1` when draining starts (whoever started it).
    pub fn watch_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = self.shutdown.clone();
        let notifier = self.notifier.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "draining: finishing running work"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "draining: finishing running work"),
                _ = shutdown.draining() => {}
            }
            shutdown.begin_drain();
            notifier.stopping();
            notifier.status("draining");
            tokio::select! {
                _ = term.recv() => tracing::warn!("second signal: stopping now"),
                _ = int.recv() => tracing::warn!("second signal: stopping now"),
                _ = shutdown.stopped() => return,
            }
            shutdown.stop();
        });
        Ok(())
    }

    /// Feeds the systemd watchdog at half its interval while `healthy()` holds, until stop.
    pub fn spawn_watchdog(&self, healthy: impl Fn() -> bool + Send + 'static) {
        let Some(every) = self.notifier.watchdog_interval() else {
            return;
        };
        let notifier = self.notifier.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => if healthy() { notifier.watchdog() },
                    _ = shutdown.stopped() => return,
                }
            }
        });
    }
}

/// Waits for `fut` until `bound` passes or stop begins; true when `fut` finished.
pub async fn within<F: std::future::Future<Output = ()>>(
    shutdown: &Shutdown,
    bound: Duration,
    fut: F,
) -> bool {
    tokio::select! {
        _ = fut => true,
        _ = tokio::time::sleep(bound) => false,
        _ = shutdown.stopped() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_implies_drain() {
        let s = Shutdown::new();
        assert!(!s.is_draining());
        s.stop();
        assert!(s.is_draining() && s.is_stopped());
        s.draining().await;
    }

    #[tokio::test]
    async fn within_reports_whether_work_finished() {
        let s = Shutdown::new();
        assert!(within(&s, Duration::from_secs(1), async {}).await);
        assert!(!within(&s, Duration::from_millis(10), std::future::pending()).await);
        s.stop();
        assert!(!within(&s, Duration::from_secs(10), std::future::pending()).await);
    }
}
