//! The cluster as admins see it: every instance, the leader roles and their recent handovers,
//! warnings; and draining or resuming an instance.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::extract::ApiPath;
use super::problem::{ApiResult, Problem};
use crate::app::auth::Principal;
use crate::app::cluster::registry::{self, Overview, Thresholds};
use crate::app::model::UserRole;
use crate::app::state::AppState;

pub async fn overview(State(state): State<AppState>, p: Principal) -> ApiResult<Json<Overview>> {
    p.require(UserRole::Admin)?;
    Ok(Json(load(&state).await?))
}

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

pub async fn drain(
    state: State<AppState>,
    p: Principal,
    id: ApiPath<String>,
) -> ApiResult<StatusCode> {
    set_drain(state, p, id, true).await
}

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
