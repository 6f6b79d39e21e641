//! Leader roles (`scheduler`, `mailer`, `janitor`) by lease rows, not session locks: a holder,
//! a term that grows with every change of holder, and an expiry on the database clock. Taking and
//! renewing are single statements, so this works through a transaction-mode pooler.
//!
//! A holder stops acting `safety_margin` before its lease can have expired — measured on its own
//! monotonic clock from the moment it *sent* the statement that granted or renewed the lease —
//! so two instances never act in the same role at once even when one of them is cut off from
//! the database. A draining or stopping instance releases its roles at once and wakes the others
//! over the bus, so a graceful handover takes well under a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::availability::Availability;
use super::registry;
use crate::app::bus::Bus;
use crate::app::license::Licensing;
use crate::app::model::{LeaderRole, millis};
use crate::app::store::Store;
use crate::lifecycle::Shutdown;

#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    pub lease: Duration,
    pub renew_every: Duration,
    pub safety_margin: Duration,
    /// Instances silent this long do not count when deciding who runs the newest version.
    pub stale_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    term: i64,
    /// Acting in the role is allowed until this instant.
    valid_until: Instant,
}

/// The roles this instance holds right now.
#[derive(Clone, Default)]
pub struct Roles {
    held: Arc<Mutex<HashMap<LeaderRole, Held>>>,
}

impl Roles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeaderRole, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The term under which this instance may act in `role` now, if it may.
    pub fn term(&self, role: LeaderRole) -> Option<i64> {
        self.lock()
            .get(&role)
            .filter(|h| h.valid_until > Instant::now())
            .map(|h| h.term)
    }

    /// Roles this instance may act in now, by name.
    pub fn names(&self) -> Vec<&'static str> {
        let now = Instant::now();
        let mut v: Vec<LeaderRole> = self
            .lock()
            .iter()
            .filter(|(_, h)| h.valid_until > now)
            .map(|(r, _)| *r)
            .collect();
        v.sort_unstable();
        v.into_iter().map(LeaderRole::as_str).collect()
    }
}

/// Runs the leader loop until shutdown, then releases every role. An instance in the licence's
/// free tier takes no role (and gives up those it holds when it falls into it).
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    store: Arc<dyn Store>,
    instance: String,
    roles: Roles,
    bus: Bus,
    availability: Availability,
    licensing: Licensing,
    settings: LeaseSettings,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // `licensing` lives in the task, so its standing's sender outlives the loop.
        let mut standing = licensing.subscribe();
        let leader = Leader {
            store,
            instance,
            roles,
            bus,
            settings,
        };
        let mut tick = tokio::time::interval(settings.renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = leader.bus.leases_woken() => {}
                _ = availability.changed() => {}
                _ = standing.changed() => {}
                _ = shutdown.draining() => break,
            }
            let licensed = standing.borrow_and_update().may_lead();
            if availability.is_open() && licensed && leader.eligible().await {
                leader.renew_or_take().await;
            } else {
                leader.release_all().await;
            }
        }
        leader.release_all().await;
    })
}

struct Leader {
    store: Arc<dyn Store>,
    instance: String,
    roles: Roles,
    bus: Bus,
    settings: LeaseSettings,
}

impl Leader {
    fn lease_ms(&self) -> i64 {
        millis(self.settings.lease)
    }

    fn valid_until(&self, sent: Instant) -> Instant {
        sent + self
            .settings
            .lease
            .saturating_sub(self.settings.safety_margin)
    }

    /// Only instances at the newest version among the active ones lead, so during a rolling
    /// upgrade the new code takes over the roles as soon as it runs.
    async fn eligible(&self) -> bool {
        let Ok((now, rows)) = self.store.instances().await else {
            return true;
        };
        let stale_ms = millis(self.settings.stale_after);
        let mine = env!("CARGO_PKG_VERSION");
        !rows.iter().any(|r| {
            r.stopped_at.is_none()
                && now - r.heartbeat_at <= stale_ms
                && !r.draining
                && registry::newer(&r.info.version, mine)
        })
    }

    /// Records `role` as held under `term`, valid by our clock from when the request was `sent`.
    fn hold(&self, role: LeaderRole, term: i64, sent: Instant) {
        let valid_until = self.valid_until(sent);
        self.roles.lock().insert(role, Held { term, valid_until });
    }

    async fn renew_or_take(&self) {
        for role in LeaderRole::ALL {
            let current = self.roles.lock().get(&role).copied();
            let sent = Instant::now();
            match current {
                Some(held) => match self
                    .store
                    .renew_lease(role.as_str(), &self.instance, held.term, self.lease_ms())
                    .await
                {
                    Ok(Some(grant)) => {
                        self.hold(role, grant.term, sent);
                    }
                    Ok(None) => {
                        self.roles.lock().remove(&role);
                        tracing::warn!(
                            role = role.as_str(),
                            term = held.term,
                            "lost a leader role (its lease expired)"
                        );
                    }
                    // Keep acting only until the lease may have run out by our own clock.
                    Err(e) => {
                        tracing::warn!(role = role.as_str(), error = %e, "could not renew a leader role")
                    }
                },
                None => match self
                    .store
                    .acquire_lease(role.as_str(), &self.instance, self.lease_ms())
                    .await
                {
                    Ok(Some(grant)) => {
                        self.hold(role, grant.term, sent);
                        tracing::info!(
                            role = role.as_str(),
                            term = grant.term,
                            "took a leader role"
                        );
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(role = role.as_str(), error = %e, "could not try a leader role")
                    }
                },
            }
        }
    }

    async fn release_all(&self) {
        let held: Vec<(LeaderRole, Held)> = self.roles.lock().drain().collect();
        let mut released = false;
        for (role, h) in held {
            let role = role.as_str();
            match self.store.release_lease(role, &self.instance, h.term).await {
                Ok(true) => {
                    released = true;
                    tracing::info!(role, term = h.term, "released a leader role");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(role, error = %e, "could not release a leader role; it will expire")
                }
            }
        }
        if released {
            self.bus.wake_leases();
        }
    }
}
