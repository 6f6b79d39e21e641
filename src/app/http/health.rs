//! Health and metrics: `/livez` (the process answers), `/readyz` (it should get traffic: the
//! database answers, migrations are done, it is not draining), `/health` and `/healthz` as
//! aliases of `/readyz`, and `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::problem::ApiResult;
use crate::app::auth::Principal;
use crate::app::state::AppState;

/// `GET /livez`: the process answers.
pub async fn livez(State(state): State<AppState>) -> Response {
    Json(json!({"status": "alive", "instance": state.instance, "version": crate::version()}))
        .into_response()
}

/// `GET /readyz` (and `/health`, `/healthz`): 200 when this instance takes work, else 503, with the reasons as JSON.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database =
        match tokio::time::timeout(Duration::from_secs(2), state.store.schema_version()).await {
            Ok(Ok(v)) if v >= state.schema_version => Ok(v),
            Ok(Ok(v)) => Err(format!(
                "schema version {v}, waiting for {}",
                state.schema_version
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 2s".to_owned()),
        };
    let draining = state.shutdown.is_draining() || !state.availability.is_open();
    let ready = database.is_ok() && !draining;
    let status = match (&database, draining) {
        (_, true) => "draining",
        (Err(_), _) => "unavailable",
        (Ok(_), false) => "ready",
    };
    let body = json!({
        "status": status,
        "instance": state.instance,
        "version": crate::version(),
        "database": match &database { Ok(_) => "ok".to_owned(), Err(e) => e.clone() },
        "backend": state.store.backend(),
        "draining": draining,
        // NATS only speeds things up; its state never makes an instance unready.
        "nats": state.bus.nats_state(),
        "roles": state.roles.names(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "render_workers": {"size": state.pool.size(), "busy": state.pool.busy()},
        // Licensing never makes an instance unready: the free tier serves too.
        "license": state.licensing.standing().tier.as_str(),
        "jobs_running": state.jobs.running(),
    });
    let mut body = body;
    match state.dr.last() {
        Some(dr) => {
            for (k, v) in dr.json().as_object().into_iter().flatten() {
                body[k] = v.clone();
            }
        }
        None => body["role"] = json!("active"),
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Prometheus text format. Needs a signed-in user or token unless `metrics.public` is set.
pub async fn metrics(
    State(state): State<AppState>,
    principal: Option<Principal>,
) -> ApiResult<Response> {
    if !state.config.metrics.public && principal.is_none() {
        return Err(super::problem::Problem::unauthorized(
            "metrics need an API token (or set metrics.public = true for a private scrape network)",
        ));
    }
    let m = &state.metrics;
    if let Ok(depth) = state.store.queue_depth().await {
        m.queue_depth.set(depth);
    }
    m.workers.set(state.pool.size() as i64);
    m.workers_busy.set(state.pool.busy() as i64);
    m.workers_replaced.set(
        state
            .pool
            .stats()
            .killed
            .load(std::sync::atomic::Ordering::Relaxed) as i64,
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response())
}
