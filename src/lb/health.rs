//! Active health checks: every upstream gets `GET <health.path>` each interval on a fresh
//! connection (so a full accept queue or a dead host shows), and `rise` / `fall` consecutive
//! results flip its health. A draining app answers 503 on /readyz, so it stops getting new
//! requests while its open ones finish.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::http::{Request, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::lb::Core;
use crate::lb::config::HealthConfig;
use crate::lb::upstream::Upstream;
use crate::lifecycle::Shutdown;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not probed yet: takes requests, the first probe decides.
    Unknown = 0,
    Up = 1,
    Down = 2,
}

impl Health {
    pub fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// Consecutive probe results and the health they add up to.
#[derive(Debug, Clone, Copy)]
pub struct Probes {
    health: Health,
    successes: u32,
    failures: u32,
}

impl Default for Probes {
    fn default() -> Self {
        Probes {
            health: Health::Unknown,
            successes: 0,
            failures: 0,
        }
    }
}

impl Probes {
    /// Counts one result; returns the new health when it changed. The first result decides at
    /// once, so a dead upstream is not offered traffic for `fall` intervals after a start.
    pub fn record(&mut self, healthy: bool, rise: u32, fall: u32) -> Option<Health> {
        if healthy {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let next = match self.health {
            Health::Unknown if healthy => Health::Up,
            Health::Unknown => Health::Down,
            Health::Up if self.failures >= fall => Health::Down,
            Health::Down if self.successes >= rise => Health::Up,
            current => current,
        };
        (next != self.health).then(|| {
            self.health = next;
            next
        })
    }

    /// Down now, whatever the count; `rise` good probes bring it back.
    pub fn force_down(&mut self) -> bool {
        self.successes = 0;
        let changed = self.health != Health::Down;
        self.health = Health::Down;
        changed
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Answered(u16),
    /// No answer: refused, reset, timed out.
    Unreachable(String),
}

impl ProbeOutcome {
    pub fn is_healthy(&self) -> bool {
        matches!(self, ProbeOutcome::Answered(200..=299))
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeOutcome::Answered(status) => write!(f, "answered {status}"),
            ProbeOutcome::Unreachable(e) => write!(f, "unreachable: {e}"),
        }
    }
}

/// Probes every upstream.
pub struct Checker {
    client: Client<HttpConnector, Empty<Bytes>>,
    config: HealthConfig,
    core: Arc<Core>,
    /// Called after any health change (the lb updates its service-manager status).
    on_change: Box<dyn Fn() + Send + Sync>,
}

impl Checker {
    pub fn new(
        config: HealthConfig,
        core: Arc<Core>,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> Checker {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout.get()));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Checker {
            client,
            config,
            core,
            on_change,
        }
    }

    /// Probes every upstream once, together; the lb reports ready after this.
    pub async fn first_round(&self) {
        let probes = self.core.upstreams.list().iter().map(|u| self.check(u));
        futures_util::future::join_all(probes).await;
    }

    /// Probes each upstream every interval until stop, starting one interval from now.
    pub fn spawn(self: Arc<Self>, shutdown: Shutdown) {
        for u in self.core.upstreams.list() {
            let (me, u, shutdown) = (self.clone(), u.clone(), shutdown.clone());
            tokio::spawn(async move {
                let every = me.config.interval.get();
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => me.check(&u).await,
                        _ = shutdown.stopped() => return,
                    }
                }
            });
        }
    }

    async fn check(&self, u: &Upstream) {
        let outcome = self.probe(u).await;
        let now = self.core.upstreams.clock.now();
        let Some(health) = u.probe_result(&outcome, now, self.config.rise, self.config.fall) else {
            return;
        };
        match health {
            Health::Down => {
                tracing::warn!(upstream = %u.name, probe = %outcome, "upstream down: no new requests go to it")
            }
            _ => tracing::info!(upstream = %u.name, probe = %outcome, "upstream up"),
        }
        (self.on_change)();
    }

    async fn probe(&self, u: &Upstream) -> ProbeOutcome {
        let Ok(uri) = Uri::builder()
            .scheme("http")
            .authority(u.url.authority.clone())
            .path_and_query(self.config.path.as_str())
            .build()
        else {
            return ProbeOutcome::Unreachable("invalid probe URL".into());
        };
        let Ok(request) = Request::get(uri)
            .header(header::USER_AGENT, "quire-lb health check")
            .body(Empty::new())
        else {
            return ProbeOutcome::Unreachable("invalid probe request".into());
        };
        let timeout: Duration = self.config.timeout.get();
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => ProbeOutcome::Answered(response.status().as_u16()),
            Ok(Err(e)) => ProbeOutcome::Unreachable(crate::lb::proxy::error_chain(&e)),
            Err(_) => ProbeOutcome::Unreachable(format!("no answer within {timeout:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_probe_decides_then_rise_and_fall_count() {
        let mut p = Probes::default();
        assert_eq!(p.record(true, 2, 3), Some(Health::Up));
        assert_eq!(p.record(false, 2, 3), None);
        assert_eq!(p.record(false, 2, 3), None);
        assert_eq!(p.record(false, 2, 3), Some(Health::Down));
        assert_eq!(p.record(true, 2, 3), None);
        assert_eq!(
            p.record(false, 2, 3),
            None,
            "a failure resets the rise count"
        );
        assert_eq!(p.record(true, 2, 3), None);
        assert_eq!(p.record(true, 2, 3), Some(Health::Up));

        let mut p = Probes::default();
        assert_eq!(p.record(false, 2, 3), Some(Health::Down));
    }

    #[test]
    fn only_2xx_is_healthy() {
        assert!(ProbeOutcome::Answered(204).is_healthy());
        assert!(!ProbeOutcome::Answered(503).is_healthy());
        assert!(!ProbeOutcome::Unreachable("refused".into()).is_healthy());
    }
}
