//! The licence (`/api/v1/license`, admins): the key's licence (never the key), this instance's
//! standing, the seats in use and their history; and releasing a gone instance's seat at once.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::extract::ApiPath;
use super::problem::ApiResult;
use crate::app::auth::Principal;
use crate::app::license::service::Overview;
use crate::app::model::UserRole;
use crate::app::state::AppState;

/// `GET /api/v1/license`.
pub async fn get(State(state): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.require(UserRole::Admin)?;
    Ok(Json(overview_json(&state.licensing.overview().await?)))
}

/// The licence's JSON, also part of the HA page's (`GET /api/v1/cluster`).
pub fn overview_json(o: &Overview) -> Value {
    json!(o)
}

/// `POST /api/v1/license/seats/{instance}/release`: `instance` is the seat's instance name or
/// its holder's id.
pub async fn release(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(instance): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    p.require(UserRole::Admin)?;
    let seats = state.licensing.release(&instance, &p.user.email).await?;
    Ok(Json(json!({"released": seats, "by": p.user.email})))
}
