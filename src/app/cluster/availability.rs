//! Whether this instance takes new work — claims jobs and holds leader roles. It stops when the
//! process drains for shutdown (for good) or when an admin drains it from the HA page (until
//! resumed). Either way readiness turns false and what is running finishes.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    shutting_down: bool,
    admin_drain: bool,
}

#[derive(Clone)]
pub struct Availability {
    tx: Arc<watch::Sender<State>>,
}

impl Default for Availability {
    fn default() -> Self {
        Availability {
            tx: Arc::new(watch::channel(State::default()).0),
        }
    }
}

impl Availability {
    pub fn is_open(&self) -> bool {
        let s = *self.tx.borrow();
        !s.shutting_down && !s.admin_drain
    }

    pub fn is_admin_drained(&self) -> bool {
        self.tx.borrow().admin_drain
    }

    /// The process is shutting down: no new work, for good.
    pub fn shut(&self) {
        self.tx.send_modify(|s| s.shutting_down = true);
    }

    /// An admin drain (true) or resume (false); returns whether anything changed.
    pub fn set_admin_drain(&self, drain: bool) -> bool {
        self.tx.send_if_modified(|s| {
            let changed = s.admin_drain != drain;
            s.admin_drain = drain;
            changed
        })
    }

    /// Resolves at the next change (either way).
    pub async fn changed(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.changed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admin_drain_and_shutdown_both_close() {
        let a = Availability::default();
        assert!(a.is_open());
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.changed().await }
        });
        tokio::task::yield_now().await;
        assert!(a.set_admin_drain(true));
        waiter.await.unwrap();
        assert!(!a.is_open() && a.is_admin_drained());
        assert!(!a.set_admin_drain(true), "no change");
        a.set_admin_drain(false);
        assert!(a.is_open());
        a.shut();
        assert!(!a.is_open());
    }
}
