//! Active health checks: every upstream gets `GET <health.path>` each interval on a fresh
//! connection (so a full accept queue or a dead host shows), and `rise` / `fall` consecutive
//! results flip its health (`health`). A draining app answers 503 on /readyz, so it stops getting
//! new requests while its open ones finish.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::http::{Request, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::lb::config::HealthConfig;
use crate::lb::core::Core;
use crate::lb::health::{Health, ProbeOutcome};
use crate::lb::upstream::Upstream;
use crate::lifecycle::Shutdown;

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
