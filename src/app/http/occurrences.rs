//! Occurrences of schedules (`/api/v1/schedules/{id}/occurrences`, `/api/v1/occurrences/{id}`)
//! and the review of held ones.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::deliveries::MailView;
use super::extract::{ApiPath, ApiQuery};
use super::problem::{ApiResult, Problem};
use super::views::ts;
use crate::app::auth::Principal;
use crate::app::model::{BurstItemState, OccurrenceState, UserRole};
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
    /// A burst's rows: how many the query returned and how many are in each state.
    #[serde(skip_serializing_if = "Option::is_none")]
    burst: Option<Value>,
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
        burst: om.burst.map(|c| {
            serde_json::json!({
                "rows": o.burst_rows,
                "done": c.mailed + c.rejected,
                "counts": c,
            })
        }),
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

/// `POST /api/v1/occurrences/{id}/approve`: queues a held occurrence's mails, or those of all
/// held rows of a burst (editors).
pub async fn approve(
    state: State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<OccurrenceView>> {
    review(state, p, &id, None, true).await
}

/// `POST /api/v1/occurrences/{id}/reject` (editors).
pub async fn reject(
    state: State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<OccurrenceView>> {
    review(state, p, &id, None, false).await
}

/// `POST /api/v1/occurrences/{id}/rows/{key}/approve`: one held row of a burst (editors).
pub async fn approve_row(
    state: State<AppState>,
    p: Principal,
    ApiPath((id, key)): ApiPath<(String, String)>,
) -> ApiResult<Json<OccurrenceView>> {
    review(state, p, &id, Some(&key), true).await
}

/// `POST /api/v1/occurrences/{id}/rows/{key}/reject` (editors).
pub async fn reject_row(
    state: State<AppState>,
    p: Principal,
    ApiPath((id, key)): ApiPath<(String, String)>,
) -> ApiResult<Json<OccurrenceView>> {
    review(state, p, &id, Some(&key), false).await
}

async fn review(
    State(state): State<AppState>,
    p: Principal,
    id: &str,
    row: Option<&str>,
    approve: bool,
) -> ApiResult<Json<OccurrenceView>> {
    p.require(UserRole::Editor)?;
    let reviewed = state
        .schedules
        .review(id, row, approve, &p.user.email)
        .await?;
    Ok(Json(occurrence_view(&reviewed)))
}

/// `?state=&limit=` of a burst's rows.
#[derive(Deserialize)]
pub struct RowsQuery {
    state: Option<String>,
    limit: Option<i64>,
}

/// One row of a burst.
#[derive(Serialize)]
pub struct RowView {
    key: String,
    state: &'static str,
    recipients: Vec<String>,
    parameters: Value,
    job: Option<String>,
    pdf: Option<String>,
    error: Option<String>,
    updated_at: String,
}

/// `GET /api/v1/occurrences/{id}/rows`: a burst's rows in query order (editors).
pub async fn rows(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<RowsQuery>,
) -> ApiResult<Json<Vec<RowView>>> {
    p.require(UserRole::Editor)?;
    let filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(BurstItemState::parse(s).ok_or_else(|| {
            Problem::invalid(
                "state",
                "pending, rendering, held, mailed, failed or rejected",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let items = state.schedules.burst_items(&id, filter, limit).await?;
    Ok(Json(
        items
            .into_iter()
            .map(|it| RowView {
                pdf: it
                    .job_id
                    .as_ref()
                    .filter(|_| {
                        !matches!(
                            it.state,
                            BurstItemState::Pending | BurstItemState::Rendering
                        )
                    })
                    .map(|j| format!("/api/v1/renders/{j}/pdf")),
                key: it.row_key,
                state: it.state.as_str(),
                recipients: it.recipients,
                parameters: serde_json::from_str(&it.parameters).unwrap_or_default(),
                job: it.job_id,
                error: it.error,
                updated_at: ts(it.updated_at),
            })
            .collect(),
    ))
}
