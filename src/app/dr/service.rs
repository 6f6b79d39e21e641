//! The role an instance takes from its database, and what a change of role records. Checked at
//! start, every `dr.check_every`, and at once when a write was refused as read-only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::Role;
use super::model::{DrEvent, Epoch, Replication};
use super::peer::{Peer, PeerState};
use crate::app::config::{DrConfig, DrMode};
use crate::app::metrics::Metrics;
use crate::app::model::now_ms;
use crate::app::store::{Store, StoreError, read_only_seen};
use crate::lifecycle::Shutdown;

/// What `/readyz`, the HA page and `quire dr status` show.
#[derive(Debug, Clone)]
pub struct Status {
    pub role: Role,
    pub replication: Replication,
    pub epoch: Option<Epoch>,
    /// `None` without a peer; the peer's state or why it could not be read.
    pub peer: Option<Result<PeerState, String>>,
    pub lag_warning: bool,
}

impl Status {
    /// The fields every health answer carries.
    pub fn json(&self) -> Value {
        let mut v = json!({
            "role": self.role.name(),
            "replication_lag_seconds": self.replication.lag(),
            "lag_warning": self.lag_warning,
            "timeline": self.replication.timeline,
            "wal": self.replication.wal,
            // 0 before the first takeover.
            "epoch": self.epoch.as_ref().map_or(0, |e| e.epoch),
        });
        if self.replication.in_recovery {
            v["primary"] = json!(self.replication.primary);
        }
        if let Role::Fenced(by) = &self.role {
            v["by"] = json!(by);
        }
        if let Some(peer) = &self.peer {
            v["peer"] = match peer {
                Ok(p) => {
                    json!({"writable": p.writable, "epoch": p.epoch.as_ref().map(|e| e.epoch)})
                }
                Err(e) => json!({"error": e}),
            };
        }
        v
    }
}

#[derive(Clone)]
pub struct Dr {
    inner: Arc<Inner>,
}

struct Inner {
    config: DrConfig,
    store: Arc<dyn Store>,
    instance: String,
    peer: Option<Peer>,
    metrics: Arc<Metrics>,
    /// Why an active instance must start again in another role.
    changed: Mutex<Option<String>>,
    /// The latest status, for health answers and the HA page (no database round trip each).
    last: Mutex<Option<Status>>,
    /// The peer as last read.
    peer_state: Mutex<Option<Result<PeerState, String>>>,
}

impl Dr {
    pub fn new(
        config: &DrConfig,
        store: Arc<dyn Store>,
        instance: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        Dr {
            inner: Arc::new(Inner {
                metrics,
                peer: config.peer_database_url.as_ref().and_then(Peer::new),
                config: config.clone(),
                store,
                instance: instance.to_owned(),
                changed: Mutex::default(),
                last: Mutex::default(),
                peer_state: Mutex::default(),
            }),
        }
    }

    pub fn check_every(&self) -> Duration {
        self.inner.config.check_every.get()
    }

    /// The role now, with what it was decided from.
    pub async fn status(&self) -> Result<Status, StoreError> {
        let replication = self.inner.store.replication().await?;
        // A database migrated by an older version has no epochs yet: none recorded.
        let epoch = self.inner.store.epoch().await.ok().flatten();
        // A replica is a standby whatever its peer says: no need to wait for an unreachable one.
        let peer = if replication.in_recovery {
            None
        } else {
            self.peer_state().await
        };
        let role = self.decide(&replication, epoch.as_ref(), peer.as_ref());
        let lag = replication.lag();
        self.inner.metrics.replication_lag.set(lag.unwrap_or(0.0));
        let lag_warning =
            lag.is_some_and(|lag| lag > self.inner.config.lag_warning.get().as_secs_f64());
        let was = self.last().is_some_and(|s| s.lag_warning);
        if lag_warning && !was {
            tracing::warn!(
                lag_seconds = lag.unwrap_or(0.0),
                limit = %self.inner.config.lag_warning,
                "replication lag is above dr.lag_warning: a takeover now would lose the newest changes"
            );
        }
        let status = Status {
            role,
            replication,
            epoch,
            peer,
            lag_warning,
        };
        *self.inner.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(status.clone());
        Ok(status)
    }

    /// The peer's state: read at once the first time (so an instance starting in a fenced region
    /// never acts first), then as [`Dr::watch_peer`] last found it, so that an unreachable peer
    /// (the normal case during a disaster) never delays a takeover.
    async fn peer_state(&self) -> Option<Result<PeerState, String>> {
        let peer = self.inner.peer.as_ref()?;
        if let Some(known) = self.lock_peer().clone() {
            return Some(known);
        }
        let state = peer.state().await;
        *self.lock_peer() = Some(state.clone());
        Some(state)
    }

    /// Reads the peer every `check_every` in the background, from now on: a standby's cache is
    /// current when its database is promoted, so the takeover never waits for a peer that does
    /// not answer.
    pub fn watch_peer(&self, shutdown: Shutdown) {
        if self.inner.peer.is_none() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Some(peer) = this.inner.peer.as_ref() {
                    let state = peer.state().await;
                    *this.lock_peer() = Some(state);
                }
                tokio::select! {
                    _ = tokio::time::sleep(this.check_every()) => {}
                    _ = shutdown.stopped() => return,
                }
            }
        });
    }

    fn lock_peer(&self) -> std::sync::MutexGuard<'_, Option<Result<PeerState, String>>> {
        self.inner
            .peer_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The latest status read (`None` before the first, and always on SQLite, which is never a
    /// replica).
    pub fn last(&self) -> Option<Status> {
        self.inner
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The role history, newest first.
    pub async fn events(&self, limit: i64) -> Result<Vec<DrEvent>, StoreError> {
        self.inner.store.dr_events(limit).await
    }

    /// The rule: a replica is a standby; a writable database whose peer is writable too with a
    /// newer takeover is fenced; anything else is active. `dr.mode` pins the first two.
    fn decide(
        &self,
        replication: &Replication,
        own: Option<&Epoch>,
        peer: Option<&Result<PeerState, String>>,
    ) -> Role {
        let standby = match self.inner.config.mode {
            DrMode::Auto => replication.in_recovery,
            DrMode::Standby => true,
            DrMode::Active => false,
        };
        if standby {
            return Role::Standby;
        }
        fenced_by(own, peer).map_or(Role::Active, Role::Fenced)
    }

    /// Records that this instance, a standby since `since`, is active now: the takeover of this
    /// timeline (the next epoch, once per timeline) and the history.
    pub async fn took_over(&self, since: i64, status: &Status) -> Result<Epoch, StoreError> {
        let r = &status.replication;
        let timeline = r.timeline.unwrap_or(0);
        let epoch = self
            .inner
            .store
            .record_takeover(timeline, r.wal.as_deref(), &self.inner.instance)
            .await?;
        let since = jiff::Timestamp::from_millisecond(since)
            .map_or_else(|_| since.to_string(), |t| t.to_string());
        let detail = format!("standby since {since}");
        self.event("active", r, Some(epoch.epoch), Some(detail))
            .await?;
        // The instance whose record won tells the history once per takeover.
        if epoch.instance.as_deref() == Some(self.inner.instance.as_str()) {
            let detail = format!("timeline {timeline}");
            self.event("takeover", r, Some(epoch.epoch), Some(detail))
                .await?;
        }
        // What health answers and the HA page show: the new epoch, at once.
        let _ = self.status().await;
        tracing::warn!(
            epoch = epoch.epoch,
            timeline,
            wal = r.wal.as_deref().unwrap_or("?"),
            "the database was promoted: this instance is active now"
        );
        Ok(epoch)
    }

    async fn event(
        &self,
        event: &str,
        r: &Replication,
        epoch: Option<i64>,
        detail: Option<String>,
    ) -> Result<(), StoreError> {
        self.inner
            .store
            .record_dr_event(&DrEvent {
                id: uuid::Uuid::now_v7().to_string(),
                at: now_ms(),
                instance: self.inner.instance.clone(),
                event: event.into(),
                timeline: r.timeline,
                wal: r.wal.clone(),
                epoch,
                detail,
            })
            .await
    }

    /// Watches an active instance's role until the drain: when its database turns into a
    /// replica, or the peer took over after it, the reason is kept and the drain begins (the
    /// process then exits with [`super::EXIT_ROLE_CHANGED`]).
    pub fn watch_active(&self, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(this.check_every()) => {}
                    _ = read_only_seen().notified() => {}
                    _ = shutdown.draining() => return,
                }
                let status = match this.status().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not check this instance's role");
                        continue;
                    }
                };
                let why = match &status.role {
                    Role::Active => continue,
                    Role::Standby => "the database is a replica now".to_owned(),
                    Role::Fenced(by) => {
                        let detail = format!("epoch {} at timeline {}", by.epoch, by.timeline);
                        let _ = this
                            .event(
                                "fenced",
                                &status.replication,
                                Some(by.epoch),
                                Some(detail.clone()),
                            )
                            .await;
                        format!("the peer region took over ({detail})")
                    }
                };
                tracing::error!(reason = %why, "this instance stops acting and starts again in its new role");
                *this.lock_changed() = Some(why);
                shutdown.begin_drain();
                return;
            }
        })
    }

    /// Why the role changed while active, once the watch saw it.
    pub fn changed(&self) -> Option<String> {
        self.lock_changed().clone()
    }

    fn lock_changed(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.inner.changed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The peer's takeover when it fences this region: the peer is writable and took over after the
/// newest takeover recorded here.
fn fenced_by(own: Option<&Epoch>, peer: Option<&Result<PeerState, String>>) -> Option<Epoch> {
    let Some(Ok(peer)) = peer else { return None };
    let theirs = peer.epoch.as_ref()?;
    let ours = own.map_or(0, |e| e.epoch);
    (peer.writable && theirs.epoch > ours).then(|| theirs.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(n: i64) -> Epoch {
        Epoch {
            epoch: n,
            timeline: n + 1,
            wal: None,
            at: 0,
            instance: None,
        }
    }

    #[test]
    fn only_a_writable_peer_with_a_newer_takeover_fences() {
        let peer = |writable, e: Option<i64>| {
            Some(Ok(PeerState {
                writable,
                epoch: e.map(epoch),
            }))
        };
        assert_eq!(
            fenced_by(None, peer(true, Some(1)).as_ref()),
            Some(epoch(1))
        );
        assert_eq!(
            fenced_by(Some(&epoch(1)), peer(true, Some(2)).as_ref()),
            Some(epoch(2))
        );
        // Equal or older: this region is the newer one, or both never took over.
        assert_eq!(
            fenced_by(Some(&epoch(2)), peer(true, Some(2)).as_ref()),
            None
        );
        assert_eq!(
            fenced_by(Some(&epoch(3)), peer(true, Some(2)).as_ref()),
            None
        );
        assert_eq!(fenced_by(None, peer(true, None).as_ref()), None);
        // A replica peer, an unreachable one, none: nothing changes.
        assert_eq!(fenced_by(None, peer(false, Some(5)).as_ref()), None);
        assert_eq!(fenced_by(None, Some(Err("refused".into())).as_ref()), None);
        assert_eq!(fenced_by(None, None), None);
    }
}
