//! Occurrences of schedules (`/api/v1/schedules/{id}/occurrences`, `/api/v1/occurrences/{id}`)
//! and the review of held ones.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::deliveries::MailView;
use super::extract::{ApiPath, ApiQuery};
use super::problem::ApiResult;
use super::views::ts;
use crate::app::auth::Principal;
use crate::app::model::{OccurrenceState, UserRole};
use crate::app::schedule::service::OccurrenceMails;
use crate::app::state::AppState;

/// An occurrence with its mails.
#[derive(Serialize)]
pub struct OccurrenceView {
    id: String,
    schedule_id: String,
    fire_at: String,
    state: &'static str,
    job: Option<String>,
    pdf: Option<String>,
    error: Option<String>,
    reviewed_by: Option<String>,
    reviewed_at: Option<String>,
    /// The scheduler term and instance that created it.
    term: i64,
    instance: String,
    mails: Vec<MailView>,
}

fn occurrence_view(om: &OccurrenceMails) -> OccurrenceView {
    let o = &om.occurrence;
    OccurrenceView {
        id: o.id.clone(),
        schedule_id: o.schedule_id.clone(),
        fire_at: ts(o.fire_at),
        state: o.state.as_str(),
        pdf: o
            .job_id
            .as_ref()
            .filter(|_| !matches!(o.state, OccurrenceState::Rendering))
            .map(|j| format!("/api/v1/renders/{j}/pdf")),
        job: o.job_id.clone(),
        error: o.error.clone(),
        reviewed_by: o.reviewed_by.clone(),
        reviewed_at: o.reviewed_at.map(ts),
        term: o.term,
        instance: o.instance.clone(),
        mails: om.mails.iter().map(MailView::from).collect(),
    }
}

/// `?limit=` of a list.
#[derive(Deserialize)]
pub struct Limit {
    limit: Option<i64>,
}

/// `GET /api/v1/schedules/{id}/occurrences` (editors).
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<Limit>,
) -> ApiResult<Json<Vec<OccurrenceView>>> {
    p.require(UserRole::Editor)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 10_000);
    let list = state.schedules.occurrences(&id, limit).await?;
    Ok(Json(list.iter().map(occurrence_view).collect()))
}

/// `GET /api/v1/occurrences/{id}` (editors).
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<OccurrenceView>> {
    p.require(UserRole::Editor)?;
    Ok(Json(occurrence_view(
        &state.schedules.occurrence(&id).await?,
    )))
}

/// `POST /api/v1/occurrences/{id}/approve`: queues a held occurrence's mails (editors).
pub async fn approve(
    state: State<AppState>,
    p: Principal,
    id: ApiPath<String>,
) -> ApiResult<Json<OccurrenceView>> {
    review(state, p, id, true).await
}

/// `POST /api/v1/occurrences/{id}/reject` (editors).
pub async fn reject(
    state: State<AppState>,
    p: Principal,
    id: ApiPath<String>,
) -> ApiResult<Json<OccurrenceView>> {
    review(state, p, id, false).await
}

async fn review(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    approve: bool,
) -> ApiResult<Json<OccurrenceView>> {
    p.require(UserRole::Editor)?;
    let reviewed = state.schedules.review(&id, approve, &p.user.email).await?;
    Ok(Json(occurrence_view(&reviewed)))
}
