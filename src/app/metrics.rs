//! Prometheus metrics of the report service (`GET /metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenderLabels {
    /// `job`, `sync` or `preview`.
    pub kind: &'static str,
    /// `succeeded`, or the error kind (`compile`, `timeout`, `memory`, …).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentOutcomeLabels {
    pub agent: String,
    /// `ok`, `failed` (the query failed on the agent) or `lost` (the connection dropped).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LicenseLabels {
    /// The licence id.
    pub license: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub version: String,
    pub instance: String,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub renders: Family<RenderLabels, Counter>,
    pub render_duration: Family<KindLabels, Histogram>,
    pub queue_depth: Gauge,
    pub workers: Gauge,
    pub workers_busy: Gauge,
    pub workers_replaced: Gauge,
    pub jobs_requeued: Counter,
    /// Mail sends by outcome: `sent`, `retry`, `failed`.
    pub mail: Family<OutcomeLabels, Counter>,
    /// Schedule fire times by outcome: `fired`, `skipped` (misfire policy), `failed`.
    pub occurrences: Family<OutcomeLabels, Counter>,
    /// Agent queries this instance sent, by agent and outcome.
    pub agent_queries: Family<AgentOutcomeLabels, Counter>,
    pub agent_query_duration: Family<AgentLabels, Histogram>,
    /// 1 for each agent connected to this instance, 0 for the others.
    pub agents_connected: Family<AgentLabels, Gauge>,
    /// A replica's replay lag, or on a primary the largest of its replicas'.
    pub replication_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// 1 while this instance holds no licence seat.
    pub license_free_tier: Gauge,
    /// Seats of the pool this instance draws from, and how many are in use.
    pub license_seats: Gauge,
    pub license_seats_in_use: Gauge,
    /// When the licence stops licensing (the end of its last day), by licence id; absent for a
    /// licence without expiry and without a key.
    pub license_expiry: Family<LicenseLabels, Gauge>,
}

impl Metrics {
    pub fn new(instance: &str) -> Self {
        let mut registry = Registry::with_prefix("quire");
        let latency = || Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        let renders = Family::<RenderLabels, Counter>::default();
        let render_duration =
            Family::<KindLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        let info = Family::<InfoLabels, Gauge>::default();
        info.get_or_create(&InfoLabels {
            version: crate::version().to_owned(),
            instance: instance.to_owned(),
        })
        .set(1);
        registry.register("build_info", "Version and instance of this process", info);
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_duration.clone(),
        );
        registry.register(
            "renders",
            "Finished renders by kind and outcome",
            renders.clone(),
        );
        registry.register(
            "render_duration_seconds",
            "Render wall time, queue wait excluded",
            render_duration.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "render_queue_depth",
            "Render jobs waiting to be claimed",
            queue_depth.clone(),
        );
        let workers = Gauge::default();
        registry.register("render_workers", "Render worker slots", workers.clone());
        let workers_busy = Gauge::default();
        registry.register(
            "render_workers_busy",
            "Render worker slots in use",
            workers_busy.clone(),
        );
        let workers_replaced = Gauge::default();
        registry.register(
            "render_workers_replaced",
            "Render worker processes killed or lost (limits, crashes, cancellations)",
            workers_replaced.clone(),
        );
        let jobs_requeued = Counter::default();
        registry.register(
            "jobs_requeued",
            "Jobs put back in the queue after their instance stopped",
            jobs_requeued.clone(),
        );
        let mail = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "mails",
            "Mail sends by outcome (sent, retry, failed)",
            mail.clone(),
        );
        let occurrences = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "schedule_occurrences",
            "Schedule fire times by outcome (fired, skipped, failed)",
            occurrences.clone(),
        );
        let agent_queries = Family::<AgentOutcomeLabels, Counter>::default();
        registry.register(
            "agent_queries",
            "Queries sent to agents by agent and outcome (ok, failed, lost)",
            agent_queries.clone(),
        );
        let agent_query_duration =
            Family::<AgentLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "agent_query_duration_seconds",
            "Time from sending a query to an agent to its last row",
            agent_query_duration.clone(),
        );
        let agents_connected = Family::<AgentLabels, Gauge>::default();
        registry.register(
            "agent_connected",
            "1 for each agent connected to this instance",
            agents_connected.clone(),
        );
        let replication_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "db_replication_lag_seconds",
            "Replication lag: this replica's replay lag, or on a primary the largest of its replicas'",
            replication_lag.clone(),
        );
        let license_free_tier = Gauge::default();
        registry.register(
            "license_free_tier",
            "1 while this instance holds no licence seat (one render worker, no leader roles)",
            license_free_tier.clone(),
        );
        let license_seats = Gauge::default();
        registry.register(
            "license_seats",
            "Seats of the licence this instance draws from (servers plus allowance)",
            license_seats.clone(),
        );
        let license_seats_in_use = Gauge::default();
        registry.register(
            "license_seats_in_use",
            "Seats of the licence in use by instances",
            license_seats_in_use.clone(),
        );
        let license_expiry = Family::<LicenseLabels, Gauge>::default();
        registry.register(
            "license_expiry_timestamp_seconds",
            "End of the licence's last valid day (UTC), in Unix seconds",
            license_expiry.clone(),
        );
        Metrics {
            registry,
            replication_lag,
            license_free_tier,
            license_seats,
            license_seats_in_use,
            license_expiry,
            agent_queries,
            agent_query_duration,
            agents_connected,
            mail,
            occurrences,
            http_requests,
            http_duration,
            renders,
            render_duration,
            queue_depth,
            workers,
            workers_busy,
            workers_replaced,
            jobs_requeued,
        }
    }

    pub fn agent_query(&self, agent: &str, outcome: &'static str, seconds: f64) {
        let agent = agent.to_owned();
        self.agent_queries
            .get_or_create(&AgentOutcomeLabels {
                agent: agent.clone(),
                outcome,
            })
            .inc();
        self.agent_query_duration
            .get_or_create(&AgentLabels { agent })
            .observe(seconds);
    }

    /// Sets which agents hold a connection to `instance`.
    pub fn agents_connected(&self, agents: &[crate::app::agents::model::Agent], instance: &str) {
        for a in agents {
            let here =
                a.connection.as_ref().and_then(|c| c.instance_id.as_deref()) == Some(instance);
            self.agents_connected
                .get_or_create(&AgentLabels {
                    agent: a.name.clone(),
                })
                .set(i64::from(here));
        }
    }

    pub fn render_finished(&self, kind: &'static str, outcome: &'static str, seconds: f64) {
        self.renders
            .get_or_create(&RenderLabels { kind, outcome })
            .inc();
        self.render_duration
            .get_or_create(&KindLabels { kind })
            .observe(seconds);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
