//! Prometheus metrics of the load balancer, served on the admin listener. Per-upstream handles
//! are looked up once at start, so the request path only touches atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why an attempt was retried, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    Connect,
    NotProcessed,
    Error,
    Timeout,
    Status,
}

impl RetryReason {
    const ALL: [RetryReason; 5] = [
        RetryReason::Connect,
        RetryReason::NotProcessed,
        RetryReason::Error,
        RetryReason::Timeout,
        RetryReason::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::NotProcessed => "not_processed",
            RetryReason::Error => "error",
            RetryReason::Timeout => "timeout",
            RetryReason::Status => "status",
        }
    }
}

/// The counters one upstream updates.
#[derive(Clone, Default)]
pub struct UpstreamMetrics {
    pub requests: Counter,
    pub failures: Counter,
    pub ejections: Counter,
    /// Requests and tunnels open to this upstream; also what least-connections reads.
    pub in_flight: Gauge,
    pub up: Gauge,
}

pub struct Metrics {
    registry: Registry,
    /// Responses to clients by status class (1xx … 5xx).
    responses: [Counter; 5],
    retries: [Counter; 5],
    pub duration: Histogram,
    pub tunnels: Gauge,
    pub connections: Gauge,
    pub panic_picks: Counter,
    upstreams: Vec<UpstreamMetrics>,
}

impl Metrics {
    pub fn new(upstream_names: &[String]) -> Metrics {
        let mut registry = Registry::with_prefix("quire_lb");
        let responses_family = Family::<ClassLabel, Counter>::default();
        let retries_family = Family::<ReasonLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        let tunnels = Gauge::default();
        let connections = Gauge::default();
        let panic_picks = Counter::default();
        registry.register(
            "responses",
            "Responses sent to clients, by status class",
            responses_family.clone(),
        );
        registry.register(
            "retries",
            "Attempts retried on another upstream, by reason",
            retries_family.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response",
            duration.clone(),
        );
        registry.register(
            "tunnels_open",
            "Open WebSocket / upgraded tunnels",
            tunnels.clone(),
        );
        registry.register(
            "client_connections_open",
            "Open client connections",
            connections.clone(),
        );
        registry.register(
            "panic_picks",
            "Requests sent while no upstream looked healthy (all were tried anyway)",
            panic_picks.clone(),
        );

        let families = UpstreamFamilies::register(&mut registry);
        let upstreams = upstream_names
            .iter()
            .map(|name| families.handles(name))
            .collect();
        let responses = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|class| responses_family.get_or_create_owned(&ClassLabel { class }));
        let retries = RetryReason::ALL
            .map(|r| retries_family.get_or_create_owned(&ReasonLabel { reason: r.as_str() }));
        Metrics {
            registry,
            responses,
            retries,
            duration,
            tunnels,
            connections,
            panic_picks,
            upstreams,
        }
    }

    pub fn upstream(&self, index: usize) -> UpstreamMetrics {
        self.upstreams.get(index).cloned().unwrap_or_default()
    }

    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].inc();
    }

    pub fn retry(&self, reason: RetryReason) {
        let i = RetryReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.retries[i].inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

struct UpstreamFamilies {
    requests: Family<UpstreamLabel, Counter>,
    failures: Family<UpstreamLabel, Counter>,
    ejections: Family<UpstreamLabel, Counter>,
    in_flight: Family<UpstreamLabel, Gauge>,
    up: Family<UpstreamLabel, Gauge>,
}

impl UpstreamFamilies {
    fn register(registry: &mut Registry) -> Self {
        let f = UpstreamFamilies {
            requests: Family::default(),
            failures: Family::default(),
            ejections: Family::default(),
            in_flight: Family::default(),
            up: Family::default(),
        };
        registry.register(
            "upstream_requests",
            "Attempts sent to an upstream",
            f.requests.clone(),
        );
        registry.register(
            "upstream_failures",
            "Attempts that failed (connect error, reset, timeout, 502/503/504)",
            f.failures.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Passive ejections of an upstream",
            f.ejections.clone(),
        );
        registry.register(
            "upstream_in_flight",
            "Requests and tunnels open to an upstream",
            f.in_flight.clone(),
        );
        registry.register(
            "upstream_up",
            "1 when the upstream takes new requests",
            f.up.clone(),
        );
        f
    }

    fn handles(&self, name: &str) -> UpstreamMetrics {
        let label = UpstreamLabel {
            upstream: name.to_owned(),
        };
        UpstreamMetrics {
            requests: self.requests.get_or_create_owned(&label),
            failures: self.failures.get_or_create_owned(&label),
            ejections: self.ejections.get_or_create_owned(&label),
            in_flight: self.in_flight.get_or_create_owned(&label),
            up: self.up.get_or_create_owned(&label),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_the_registered_values() {
        let m = Metrics::new(&["http://a:1".to_owned()]);
        m.upstream(0).requests.inc();
        m.response(503);
        m.retry(RetryReason::NotProcessed);
        let text = m.encode();
        assert!(
            text.contains("quire_lb_upstream_requests_total{upstream=\"http://a:1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("quire_lb_responses_total{class=\"5xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("quire_lb_retries_total{reason=\"not_processed\"} 1"),
            "{text}"
        );
    }
}
