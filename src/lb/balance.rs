//! Choosing an upstream for an attempt. Upstream roles first: backups get requests only when no
//! primary is available. Within a role the policy decides. When nothing looks available the lb
//! panics in the Envoy sense: it tries the upstreams anyway, primaries first, because refusing
//! every request is worse than trying an upstream that may have recovered since its last probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::lb::config::{Policy, UpstreamRole};
use crate::lb::upstream::{Upstream, Upstreams};

/// The upstreams one request has already tried (bit i is upstream i).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    pub fn add(&mut self, index: usize) {
        self.0 |= 1 << index;
    }

    pub fn contains(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }
}

pub struct Pick {
    pub upstream: Arc<Upstream>,
    /// Chosen although nothing looked available.
    pub panic: bool,
}

pub struct Balancer {
    policy: Policy,
    /// Round-robin position, and the tie-breaker for least-connections.
    counter: AtomicUsize,
}

impl Balancer {
    pub fn new(policy: Policy) -> Balancer {
        Balancer {
            policy,
            counter: AtomicUsize::new(0),
        }
    }

    pub fn pick(&self, ups: &Upstreams, tried: Tried) -> Option<Pick> {
        let now = ups.clock.now();
        for role in [UpstreamRole::Primary, UpstreamRole::Backup] {
            let eligible =
                |u: &Upstream| u.role == role && !tried.contains(u.index) && u.is_available(now);
            if let Some(u) = self.choose(ups, now, eligible) {
                return Some(Pick {
                    upstream: u.clone(),
                    panic: false,
                });
            }
        }
        for role in [UpstreamRole::Primary, UpstreamRole::Backup] {
            let eligible = |u: &Upstream| u.role == role && !tried.contains(u.index);
            if let Some(u) = self.choose(ups, now, eligible) {
                return Some(Pick {
                    upstream: u.clone(),
                    panic: true,
                });
            }
        }
        None
    }

    fn choose<'a>(
        &self,
        ups: &'a Upstreams,
        now: u64,
        eligible: impl Fn(&Upstream) -> bool,
    ) -> Option<&'a Arc<Upstream>> {
        let ramp = |u: &Upstream| u.ramp(now, ups.slow_start);
        let mut candidates = ups.list().iter().filter(|u| eligible(u));
        match self.policy {
            Policy::Failover => {
                let first = candidates.clone().next()?;
                // A recovering upstream gets its ramp's share; the rest goes on down the list.
                Some(
                    candidates
                        .find(|u| rand::random::<f64>() < ramp(u))
                        .unwrap_or(first),
                )
            }
            Policy::RoundRobin => {
                let share = |u: &Upstream| ((f64::from(u.weight) * ramp(u) * 100.0) as u64).max(1);
                let total: u64 = candidates.clone().map(|u| share(u)).sum();
                if total == 0 {
                    return None;
                }
                let mut slot = self.counter.fetch_add(1, Ordering::Relaxed) as u64 % total;
                candidates.find(|u| match slot.checked_sub(share(u)) {
                    Some(rest) => {
                        slot = rest;
                        false
                    }
                    None => true,
                })
            }
            Policy::LeastConnections => {
                let load = |u: &Upstream| {
                    (u.in_flight().max(0) as f64 + 1.0) / (f64::from(u.weight) * ramp(u))
                };
                let list: &[Arc<Upstream>] = ups.list();
                let start = self.counter.fetch_add(1, Ordering::Relaxed) % list.len().max(1);
                // Scan from a rotating start so ties spread instead of piling on the first.
                list[start..]
                    .iter()
                    .chain(&list[..start])
                    .filter(|u| eligible(u))
                    .min_by(|a, b| load(a).total_cmp(&load(b)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::health::ProbeOutcome;
    use crate::lb::upstream::tests::upstreams;

    fn names(b: &Balancer, ups: &Upstreams, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| b.pick(ups, Tried::default()).unwrap().upstream.index)
            .collect()
    }

    fn set_down(u: &Upstream) {
        u.probe_result(&ProbeOutcome::Answered(503), 1, 1, 1);
    }

    #[test]
    fn failover_sticks_to_the_first_primary_then_backups() {
        let ups = upstreams(&["http://a:1", "http://b:1 backup", "http://c:1"]);
        let b = Balancer::new(Policy::Failover);
        assert_eq!(names(&b, &ups, 3), [0, 0, 0]);
        set_down(&ups.list()[0]);
        assert_eq!(
            names(&b, &ups, 3),
            [2, 2, 2],
            "the next primary before any backup"
        );
        set_down(&ups.list()[2]);
        assert_eq!(names(&b, &ups, 2), [1, 1]);
    }

    #[test]
    fn tried_upstreams_are_skipped() {
        let ups = upstreams(&["http://a:1", "http://b:1 backup"]);
        let b = Balancer::new(Policy::Failover);
        let mut tried = Tried::default();
        tried.add(0);
        assert_eq!(b.pick(&ups, tried).unwrap().upstream.index, 1);
        tried.add(1);
        assert!(b.pick(&ups, tried).is_none());
    }

    #[test]
    fn round_robin_follows_weights() {
        let ups = upstreams(&["http://a:1", "http://b:1 weight=3", "http://c:1 backup"]);
        let b = Balancer::new(Policy::RoundRobin);
        let picks = names(&b, &ups, 400);
        let count = |i| picks.iter().filter(|p| **p == i).count();
        assert_eq!((count(0), count(1), count(2)), (100, 300, 0));
    }

    #[test]
    fn least_connections_prefers_the_idle_one() {
        let ups = upstreams(&["http://a:1", "http://b:1"]);
        let b = Balancer::new(Policy::LeastConnections);
        let _busy = [ups.list()[0].begin(), ups.list()[0].begin()];
        assert_eq!(names(&b, &ups, 3), [1, 1, 1]);
        let _busier = [
            ups.list()[1].begin(),
            ups.list()[1].begin(),
            ups.list()[1].begin(),
        ];
        assert_eq!(names(&b, &ups, 1), [0]);
    }

    #[test]
    fn panic_mode_tries_everything_when_nothing_is_up() {
        let ups = upstreams(&["http://a:1 backup", "http://b:1"]);
        let b = Balancer::new(Policy::RoundRobin);
        ups.list().iter().for_each(|u| set_down(u));
        let pick = b.pick(&ups, Tried::default()).unwrap();
        assert!(pick.panic);
        assert_eq!(pick.upstream.index, 1, "primaries first even in panic");
    }
}
