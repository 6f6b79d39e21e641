//! The admin listener, kept apart from client traffic: `/lb/status` (JSON), `/metrics`
//! (Prometheus text), `/livez`, and `/readyz` (200 while not draining and some upstream is
//! available, for an outer probe such as DNS failover or keepalived).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::lb::core::Core;
use crate::lb::upstream::UpstreamStatus;
use crate::lifecycle::Shutdown;

struct Admin {
    core: Arc<Core>,
    shutdown: Shutdown,
}

#[derive(Serialize)]
struct Status {
    policy: &'static str,
    draining: bool,
    available: usize,
    connections: i64,
    tunnels: i64,
    upstreams: Vec<UpstreamStatus>,
}

/// Serves until the stop phase (it stays up while the lb drains, so the drain can be watched).
pub async fn serve(listener: TcpListener, core: Arc<Core>, shutdown: Shutdown) {
    let state = Arc::new(Admin {
        core,
        shutdown: shutdown.clone(),
    });
    let app = Router::new()
        .route("/lb/status", get(status))
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state);
    let stopped = async move { shutdown.stopped().await };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

async fn status(State(admin): State<Arc<Admin>>) -> Json<Status> {
    let core = &admin.core;
    let now = core.upstreams.clock.now();
    Json(Status {
        policy: core.policy.as_str(),
        draining: admin.shutdown.is_draining(),
        available: core.upstreams.available_count(now),
        connections: core.metrics.connections.get(),
        tunnels: core.metrics.tunnels.get(),
        upstreams: core
            .upstreams
            .list()
            .iter()
            .map(|u| u.status(now, core.upstreams.slow_start))
            .collect(),
    })
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        admin.core.metrics.encode(),
    )
        .into_response()
}

async fn ready(State(admin): State<Arc<Admin>>) -> (StatusCode, &'static str) {
    let core = &admin.core;
    if admin.shutdown.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if core.upstreams.available_count(core.upstreams.clock.now()) == 0 {
        (StatusCode::SERVICE_UNAVAILABLE, "no upstream available\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
