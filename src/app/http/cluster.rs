//! The cluster as admins see it: every instance, the leader roles and their recent handovers,
//! warnings; and draining or resuming an instance.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::extract::ApiPath;
use super::problem::{ApiResult, Problem};
use crate::app::auth::Principal;
use serde_json::{Value, json};

use crate::app::cluster::registry::{
    self, HandoverSpan, InstanceStatus, LeaseStatus, Overview, Thresholds,
};
use crate::app::model::UserRole;
use crate::app::state::AppState;

/// `GET /api/v1/cluster`: the HA page's data (admins).
pub async fn overview(State(state): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.require(UserRole::Admin)?;
    let mut body = overview_json(&load(&state).await?);
    body["dr"] = dr_json(&state).await?;
    body["license"] = super::license::overview_json(&state.licensing.overview().await?);
    Ok(Json(body))
}

/// Disaster recovery on the HA page: the role, lag and epoch, the replicas, the role history.
pub async fn dr_json(state: &AppState) -> ApiResult<Value> {
    let mut dr = state
        .dr
        .last()
        .map_or_else(|| json!({"role": "active"}), |s| s.json());
    if let Some(s) = state.dr.last() {
        dr["replication"] = json!(s.replication.replicas);
    }
    dr["events"] = json!(state.dr.events(20).await?);
    Ok(dr)
}

/// The HA page's JSON: times in epoch milliseconds (the page computes ages from `now`).
pub fn overview_json(o: &Overview) -> Value {
    json!({
        "now": o.now,
        "you": o.you,
        "instances": o.instances.iter().map(instance_json).collect::<Vec<_>>(),
        "leases": o.leases.iter().map(lease_json).collect::<Vec<_>>(),
        "handovers": o.handovers.iter().map(handover_json).collect::<Vec<_>>(),
        "warnings": o.warnings,
    })
}

fn instance_json(i: &InstanceStatus) -> Value {
    json!({
        "id": i.id,
        "name": i.name,
        "version": i.version,
        "build": i.build,
        "address": i.address,
        "state": i.state,
        "you": i.you,
        "started_at": i.started_at,
        "uptime_seconds": i.uptime_seconds,
        "last_heartbeat": i.last_heartbeat,
        "heartbeat_age_ms": i.heartbeat_age_ms,
        "draining": i.draining,
        "drain_requested": i.drain_requested,
        "nats": i.nats,
        "roles": i.roles,
        "key_fingerprint": i.key_fingerprint,
        "license_fingerprint": i.license_fingerprint,
        "license": i.license,
        "schema_version": i.schema_version,
    })
}

fn lease_json(l: &LeaseStatus) -> Value {
    json!({
        "role": l.role,
        "holder": l.holder,
        "term": l.term,
        "expires_at": l.expires_at,
        "acquired_at": l.acquired_at,
    })
}

fn handover_json(h: &HandoverSpan) -> Value {
    json!({
        "role": h.role,
        "term": h.term,
        "holder": h.holder,
        "from": h.from,
        "until": h.until,
        "ended": h.ended,
    })
}

/// The HA overview as the registry computes it for this instance.
pub async fn load(state: &AppState) -> ApiResult<Overview> {
    let t = Thresholds {
        stale_after: state.config.ha.stale_after.get(),
    };
    Ok(registry::overview(
        state.store.as_ref(),
        &state.instance,
        t,
        state.config.ha.enabled,
    )
    .await?)
}

/// `POST /api/v1/cluster/instances/{id}/drain` (admins).
pub async fn drain(
    state: State<AppState>,
    p: Principal,
    id: ApiPath<String>,
) -> ApiResult<StatusCode> {
    set_drain(state, p, id, true).await
}

/// `POST /api/v1/cluster/instances/{id}/resume` (admins).
pub async fn resume(
    state: State<AppState>,
    p: Principal,
    id: ApiPath<String>,
) -> ApiResult<StatusCode> {
    set_drain(state, p, id, false).await
}

async fn set_drain(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    drain: bool,
) -> ApiResult<StatusCode> {
    p.require(UserRole::Admin)?;
    if !registry::request_drain(state.store.as_ref(), &state.bus, &id, drain).await? {
        return Err(Problem::not_found(format!("instance {id}")));
    }
    tracing::info!(instance = %id, drain, by = %p.user.email, "drain requested");
    Ok(StatusCode::ACCEPTED)
}
