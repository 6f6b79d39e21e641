//! Hints between the parts of the app and, in HA mode, between instances: job progress for live
//! followers, wake-ups for job runners and leader loops, cache changes, drain requests.
//!
//! **Invariant:** the bus is never needed for correctness. Every event is also in the database,
//! runners and leader loops also poll, caches also compare a version table, and followers re-read
//! the database on a gap or a quiet interval. The bus only makes things prompt. In-process
//! delivery is always on; with NATS configured (`nats.rs`) the same hints cross instances.

mod nats;

use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, broadcast};

use super::model::JobEvent;

pub use nats::BusError;

/// Events buffered per follower before it lags (and re-reads the database).
const CAPACITY: usize = 1024;

/// A hint for whoever keeps state that another instance may have changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Hint {
    /// Something of this kind (`fonts`) changed: re-read it.
    CacheChanged(String),
    /// An admin asked instance `id` to drain (`true`) or resume (`false`).
    Drain { id: String, drain: bool },
    /// The connection to NATS came back; hints may have been missed meanwhile.
    Reconnected,
}

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    /// This instance, so its own hints coming back from NATS are not delivered twice.
    origin: String,
    events: broadcast::Sender<Arc<JobEvent>>,
    hints: broadcast::Sender<Hint>,
    wake_jobs: Notify,
    wake_leases: Notify,
    wake_mail: Notify,
    remote: OnceLock<nats::Link>,
}

impl Bus {
    /// An in-process bus.
    pub fn new(origin: &str) -> Self {
        Bus {
            inner: Arc::new(Inner {
                origin: origin.to_owned(),
                events: broadcast::channel(CAPACITY).0,
                hints: broadcast::channel(64).0,
                wake_jobs: Notify::new(),
                wake_leases: Notify::new(),
                wake_mail: Notify::new(),
                remote: OnceLock::new(),
            }),
        }
    }

    /// Extends the bus across instances through NATS. Returns at once; the connection is
    /// (re)established in the background and the instance works without it meanwhile.
    pub async fn connect_nats(&self, servers: &[String], prefix: &str) -> Result<(), BusError> {
        let link = nats::Link::connect(self.clone(), servers, prefix).await?;
        // Connecting twice is a programming error; keep the first link.
        let _ = self.inner.remote.set(link);
        Ok(())
    }

    /// `off`, `connected` or `disconnected`.
    pub fn nats_state(&self) -> &'static str {
        self.inner.remote.get().map_or("off", nats::Link::state)
    }

    /// The NATS client and subject prefix while NATS is connected; `None` without NATS or
    /// while it is down.
    pub fn nats_client(&self) -> Option<(async_nats::Client, String)> {
        self.inner.remote.get().and_then(nats::Link::client)
    }

    /// Announces a job event to its followers on every instance.
    pub fn publish(&self, event: JobEvent) {
        let event = Arc::new(event);
        if let Some(remote) = self.inner.remote.get() {
            remote.send(nats::Message::Event(event.as_ref().clone()));
        }
        self.deliver_event(event);
    }

    /// Every job event published from now on, from any instance.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<JobEvent>> {
        self.inner.events.subscribe()
    }

    /// New work was queued (here or elsewhere).
    pub fn wake_workers(&self) {
        self.inner.wake_jobs.notify_one();
        self.send(nats::Message::WakeJobs);
    }

    pub async fn workers_woken(&self) {
        self.inner.wake_jobs.notified().await
    }

    /// A leader role was released: others may take it now rather than at their next tick.
    pub fn wake_leases(&self) {
        self.send(nats::Message::WakeLeases);
    }

    pub async fn leases_woken(&self) {
        self.inner.wake_leases.notified().await
    }

    /// Mail was queued: the mailer (wherever it runs) sends it now rather than at its next tick.
    pub fn wake_mail(&self) {
        self.inner.wake_mail.notify_one();
        self.send(nats::Message::WakeMail);
    }

    pub async fn mail_woken(&self) {
        self.inner.wake_mail.notified().await
    }

    /// Tells other instances that something they cache changed.
    pub fn cache_changed(&self, kind: &str) {
        self.send(nats::Message::Cache(kind.to_owned()));
    }

    /// Asks instance `id` to drain or resume (it also reads the request from the database).
    pub fn request_drain(&self, id: &str, drain: bool) {
        let hint = Hint::Drain {
            id: id.to_owned(),
            drain,
        };
        self.send(nats::Message::Hint(hint.clone()));
        self.deliver_hint(hint);
    }

    pub fn hints(&self) -> broadcast::Receiver<Hint> {
        self.inner.hints.subscribe()
    }

    fn send(&self, msg: nats::Message) {
        if let Some(remote) = self.inner.remote.get() {
            remote.send(msg);
        }
    }

    fn deliver_event(&self, event: Arc<JobEvent>) {
        // No followers is not an error.
        let _ = self.inner.events.send(event);
    }

    fn deliver_hint(&self, hint: Hint) {
        let _ = self.inner.hints.send(hint);
    }

    /// Delivers what arrived from another instance.
    fn receive(&self, msg: nats::Message) {
        match msg {
            nats::Message::Event(e) => self.deliver_event(Arc::new(e)),
            nats::Message::WakeJobs => self.inner.wake_jobs.notify_one(),
            nats::Message::WakeLeases => self.inner.wake_leases.notify_one(),
            nats::Message::WakeMail => self.inner.wake_mail.notify_one(),
            nats::Message::Cache(kind) => self.deliver_hint(Hint::CacheChanged(kind)),
            nats::Message::Hint(h) => self.deliver_hint(h),
        }
    }
}
