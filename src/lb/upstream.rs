//! The upstreams and what the lb knows about each: health from probes, passive ejection from real
//! requests, slow start after a return, and the requests open to it. Everything the request path
//! reads is an atomic; the lock is taken only when a probe or a failure changes something.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Notify;

use crate::lb::config::{LbConfig, PassiveConfig, UpstreamConfig, UpstreamRole, UpstreamUrl};
use crate::lb::health::{Health, ProbeOutcome, Probes};
use crate::lb::metrics::{Metrics, UpstreamMetrics};
use crate::lb::passive::{Passive, millis};

/// Milliseconds since the lb started, on a monotonic clock; 0 means "never".
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Clock {
        Clock(Instant::now())
    }

    pub fn now(&self) -> u64 {
        millis(self.0.elapsed()).max(1)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

pub struct Upstream {
    pub index: usize,
    pub url: UpstreamUrl,
    /// The URL as text, for logs, metrics and status.
    pub name: String,
    pub role: UpstreamRole,
    pub weight: u32,
    health: AtomicU8,
    ejected_until: AtomicU64,
    recovered_at: AtomicU64,
    /// Set while passive bookkeeping has something a success must clear, so the common path
    /// does not take the lock.
    troubled: AtomicBool,
    track: Mutex<Track>,
    /// Woken when probes stop getting answers, so tunnels to this upstream close.
    unreachable: Notify,
    pub metrics: UpstreamMetrics,
}

#[derive(Default)]
struct Track {
    probes: Probes,
    passive: Passive,
    last_probe: Option<String>,
}

impl Upstream {
    fn new(index: usize, config: &UpstreamConfig, metrics: UpstreamMetrics) -> Upstream {
        Upstream {
            index,
            name: config.url.to_string(),
            url: config.url.clone(),
            role: config.role,
            weight: config.weight,
            health: AtomicU8::new(Health::Unknown as u8),
            ejected_until: AtomicU64::new(0),
            recovered_at: AtomicU64::new(0),
            troubled: AtomicBool::new(false),
            track: Mutex::default(),
            unreachable: Notify::new(),
            metrics,
        }
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Takes new requests: not known to be down, not ejected.
    pub fn is_available(&self, now: u64) -> bool {
        self.health() != Health::Down && now >= self.ejected_until.load(Ordering::Relaxed)
    }

    /// Share of its weight an upstream gets while it slow-starts after coming back: from 0.1
    /// to 1 over `slow_start` ms.
    pub fn ramp(&self, now: u64, slow_start: u64) -> f64 {
        let since = self
            .recovered_at
            .load(Ordering::Relaxed)
            .max(self.ejected_until.load(Ordering::Relaxed));
        if since == 0 || slow_start == 0 || now >= since + slow_start {
            return 1.0;
        }
        (now.saturating_sub(since) as f64 / slow_start as f64).max(0.1)
    }

    pub fn in_flight(&self) -> i64 {
        self.metrics.in_flight.get()
    }

    /// Counts a request or tunnel as open until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.metrics.requests.inc();
        self.metrics.in_flight.inc();
        InFlight(self.clone())
    }

    /// Resolves when probes find this upstream unreachable. Create it before checking state, so
    /// a notification in between is not missed.
    pub fn unreachable(&self) -> tokio::sync::futures::Notified<'_> {
        self.unreachable.notified()
    }

    fn track(&self) -> MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_health(&self, health: Health, now: u64) {
        let before = Health::from_u8(self.health.swap(health as u8, Ordering::Relaxed));
        if before == Health::Down && health == Health::Up {
            // Probes just watched it come back (typically a restart): that ends a passive
            // ejection too; slow start eases it in.
            self.recovered_at.store(now, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
        self.metrics.up.set(i64::from(health != Health::Down));
    }

    /// Applies a probe result; returns the new health when it changed.
    pub fn probe_result(
        &self,
        outcome: &ProbeOutcome,
        now: u64,
        rise: u32,
        fall: u32,
    ) -> Option<Health> {
        let changed = {
            let mut t = self.track();
            t.last_probe = Some(outcome.to_string());
            t.probes.record(outcome.is_healthy(), rise, fall)
        };
        if let Some(h) = changed {
            self.set_health(h, now);
            if h == Health::Down && matches!(outcome, ProbeOutcome::Unreachable(_)) {
                self.unreachable.notify_waiters();
            }
        }
        changed
    }

    /// The instance said it is draining: no new requests until probes see it ready again.
    /// Returns true when this changed its health.
    pub fn mark_draining(&self, now: u64) -> bool {
        let changed = self.track().probes.force_down();
        if changed {
            self.set_health(Health::Down, now);
        }
        changed
    }

    pub fn status(&self, now: u64, slow_start: u64) -> UpstreamStatus {
        let t = self.track();
        let until = self.ejected_until.load(Ordering::Relaxed);
        UpstreamStatus {
            url: self.name.clone(),
            role: self.role.as_str(),
            weight: self.weight,
            health: self.health().as_str(),
            available: self.is_available(now),
            in_flight: self.in_flight(),
            ejected_for_ms: until.saturating_sub(now),
            ejections: t.passive.ejections(),
            consecutive_failures: t.passive.failures(),
            slow_start: self.ramp(now, slow_start) < 1.0,
            last_probe: t.last_probe.clone(),
            requests: self.metrics.requests.get(),
            failures: self.metrics.failures.get(),
        }
    }
}

/// What `/lb/status` shows for one upstream.
#[derive(Debug, Serialize)]
pub struct UpstreamStatus {
    pub url: String,
    pub role: &'static str,
    pub weight: u32,
    pub health: &'static str,
    pub available: bool,
    pub in_flight: i64,
    pub ejected_for_ms: u64,
    pub ejections: u32,
    pub consecutive_failures: u32,
    pub slow_start: bool,
    pub last_probe: Option<String>,
    pub requests: u64,
    pub failures: u64,
}

/// A request or tunnel open to an upstream.
pub struct InFlight(Arc<Upstream>);

impl InFlight {
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

/// All upstreams, in the configured order, with the rules that need to see more than one.
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    pub clock: Clock,
    passive: PassiveConfig,
    /// Milliseconds.
    pub slow_start: u64,
}

impl Upstreams {
    pub fn new(config: &LbConfig, metrics: &Metrics, clock: Clock) -> Upstreams {
        let list = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| Arc::new(Upstream::new(i, u, metrics.upstream(i))))
            .collect::<Vec<_>>();
        for u in &list {
            u.metrics.up.set(1);
        }
        Upstreams {
            list,
            clock,
            passive: config.passive.clone(),
            slow_start: millis(config.slow_start.get()),
        }
    }

    pub fn list(&self) -> &[Arc<Upstream>] {
        &self.list
    }

    pub fn available_count(&self, now: u64) -> usize {
        self.list.iter().filter(|u| u.is_available(now)).count()
    }

    /// A real request to `u` failed. Ejects it after enough failures in a row, unless it is the
    /// last upstream still taking requests: with nothing else to send to, a struggling upstream
    /// beats none. Returns how long it is ejected for, in ms.
    pub fn failure(&self, u: &Upstream) -> Option<u64> {
        u.metrics.failures.inc();
        let now = self.clock.now();
        let mut t = u.track();
        u.troubled.store(true, Ordering::Relaxed);
        if !t.passive.failure(now, &self.passive) {
            return None;
        }
        let others = self
            .list
            .iter()
            .any(|o| o.index != u.index && o.is_available(now));
        if !others {
            t.passive.spare();
            return None;
        }
        let until = t.passive.eject(now, &self.passive);
        u.ejected_until.store(until, Ordering::Relaxed);
        u.metrics.ejections.inc();
        Some(until - now)
    }

    pub fn success(&self, u: &Upstream) {
        if !u.troubled.load(Ordering::Relaxed) {
            return;
        }
        let mut t = u.track();
        t.passive.success(self.clock.now(), &self.passive);
        u.troubled.store(!t.passive.is_clean(), Ordering::Relaxed);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Span;

    pub fn upstreams(specs: &[&str]) -> Upstreams {
        let config = LbConfig {
            upstreams: specs.iter().map(|s| s.parse().unwrap()).collect(),
            passive: PassiveConfig {
                failures: 2,
                ejection_time: Span::secs(10),
                ..PassiveConfig::default()
            },
            ..LbConfig::default()
        };
        let names: Vec<String> = config.upstreams.iter().map(|u| u.url.to_string()).collect();
        Upstreams::new(&config, &Metrics::new(&names), Clock::new())
    }

    #[test]
    fn failures_eject_but_never_the_last_available() {
        let ups = upstreams(&["http://a:1", "http://b:1"]);
        let [a, b] = [&ups.list()[0], &ups.list()[1]];
        assert_eq!(ups.failure(a), None);
        assert!(ups.failure(a).is_some_and(|ms| ms >= 9_000));
        assert!(!a.is_available(ups.clock.now()));
        ups.failure(b);
        assert_eq!(ups.failure(b), None, "b is the last one available");
        assert!(b.is_available(ups.clock.now()));
    }

    #[test]
    fn probes_change_health_and_draining_takes_effect_at_once() {
        let ups = upstreams(&["http://a:1"]);
        let a = &ups.list()[0];
        assert_eq!(
            a.probe_result(&ProbeOutcome::Answered(200), 5, 2, 2),
            Some(Health::Up)
        );
        assert!(a.mark_draining(6));
        assert!(!a.is_available(7));
        assert_eq!(a.probe_result(&ProbeOutcome::Answered(200), 8, 2, 2), None);
        assert_eq!(
            a.probe_result(&ProbeOutcome::Answered(200), 9, 2, 2),
            Some(Health::Up)
        );
        assert!(a.ramp(10, 1_000) < 0.2, "slow start after coming back");
        assert_eq!(a.ramp(2_000, 1_000), 1.0);
    }

    #[test]
    fn a_probe_verified_recovery_ends_an_ejection() {
        let ups = upstreams(&["http://a:1", "http://b:1"]);
        let a = &ups.list()[0];
        a.probe_result(&ProbeOutcome::Answered(200), 1, 1, 1);
        ups.failure(a);
        ups.failure(a);
        assert!(!a.is_available(ups.clock.now()));
        a.probe_result(&ProbeOutcome::Unreachable("refused".into()), 2, 1, 1);
        a.probe_result(&ProbeOutcome::Answered(200), ups.clock.now(), 1, 1);
        assert!(a.is_available(ups.clock.now()));
    }

    #[tokio::test]
    async fn unreachable_wakes_tunnels_but_draining_does_not() {
        let ups = upstreams(&["http://a:1"]);
        let a = &ups.list()[0];
        a.probe_result(&ProbeOutcome::Answered(200), 1, 1, 1);
        let woken = a.unreachable();
        a.probe_result(&ProbeOutcome::Answered(503), 2, 1, 1);
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(20), woken).await;
        assert!(quiet.is_err(), "a draining instance keeps its tunnels");
        a.probe_result(&ProbeOutcome::Answered(200), 3, 1, 1);
        let woken = a.unreachable();
        a.probe_result(&ProbeOutcome::Unreachable("refused".into()), 4, 1, 1);
        tokio::time::timeout(std::time::Duration::from_millis(20), woken)
            .await
            .unwrap();
    }
}
