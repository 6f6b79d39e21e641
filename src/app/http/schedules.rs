//! Schedules (`/api/v1/schedules`) and the cron preview of the schedule form. The rules live in
//! `schedule::service`; this file reads requests and shapes answers.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::extract::{self, ApiPath, ApiQuery};
use super::problem::ApiResult;
use super::views::ts;
use crate::app::auth::Principal;
use crate::app::model::{BurstSpec, Misfire, Schedule, UserRole};
use crate::app::schedule::cron::Cron;
use crate::app::schedule::service::{self, Draft};
use crate::app::state::AppState;
use crate::config::Span;

#[derive(Deserialize)]
struct ScheduleRequest {
    name: String,
    /// Template id or name.
    template: String,
    cron: String,
    #[serde(default = "utc")]
    timezone: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    recipients: Vec<String>,
    #[serde(default = "default_subject")]
    subject: String,
    #[serde(default = "default_body")]
    body: String,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    hold_for_review: bool,
    /// Spread the fire time by up to this much (e.g. "5m").
    #[serde(default)]
    jitter: Option<Span>,
    /// `null` or absent means the default, "latest".
    #[serde(default)]
    misfire: Option<Misfire>,
    #[serde(default)]
    misfire_window: Option<Span>,
    /// One report per row of this query (see README, "Bursting").
    #[serde(default)]
    burst: Option<BurstSpec>,
}

impl From<ScheduleRequest> for Draft {
    fn from(r: ScheduleRequest) -> Draft {
        Draft {
            name: r.name,
            template: r.template,
            cron: r.cron,
            timezone: r.timezone,
            parameters: r.parameters,
            data: r.data.map(|d| d.get().to_owned()),
            recipients: r.recipients,
            subject: r.subject,
            body: r.body,
            enabled: r.enabled,
            hold_for_review: r.hold_for_review,
            jitter: r.jitter,
            misfire: r.misfire,
            misfire_window: r.misfire_window,
            burst: r.burst,
        }
    }
}

fn utc() -> String {
    "UTC".into()
}
fn default_subject() -> String {
    "{schedule} — {date}".into()
}
fn default_body() -> String {
    "The report \"{schedule}\" for {date} is attached.\n".into()
}
fn yes() -> bool {
    true
}

/// A schedule as the API shows it, with its next fire times.
#[derive(Serialize)]
pub struct ScheduleView {
    id: String,
    name: String,
    template: String,
    template_id: String,
    cron: String,
    timezone: String,
    parameters: Value,
    data: Value,
    recipients: Vec<String>,
    subject: String,
    body: String,
    enabled: bool,
    hold_for_review: bool,
    jitter: String,
    misfire: Misfire,
    misfire_window: String,
    next_fire_at: Option<String>,
    last_fire_at: Option<String>,
    skipped_total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    burst: Option<BurstSpec>,
    /// The next few fire times, in the schedule's zone.
    upcoming: Vec<String>,
}

/// The view of a schedule (also embedded in its console page).
pub fn schedule_view(s: &Schedule) -> ScheduleView {
    let tz = TimeZone::get(&s.spec.timezone).unwrap_or(TimeZone::UTC);
    let upcoming = match (s.spec.cron.parse::<Cron>(), s.next_fire_at) {
        (Ok(c), Some(next)) => std::iter::once(next)
            .chain(
                c.upcoming(
                    jiff::Timestamp::from_millisecond(next).unwrap_or_default(),
                    &tz,
                    4,
                )
                .into_iter()
                .map(|t| t.as_millisecond()),
            )
            .map(|ms| local(ms, &tz))
            .collect(),
        _ => Vec::new(),
    };
    ScheduleView {
        id: s.id.clone(),
        name: s.spec.name.clone(),
        template: s.spec.template_name.clone(),
        template_id: s.spec.template_id.clone(),
        cron: s.spec.cron.clone(),
        timezone: s.spec.timezone.clone(),
        parameters: serde_json::from_str(&s.spec.parameters).unwrap_or_default(),
        data: serde_json::from_str(&s.spec.data).unwrap_or_default(),
        recipients: s.spec.recipients.clone(),
        subject: s.spec.subject.clone(),
        body: s.spec.body.clone(),
        enabled: s.spec.enabled,
        hold_for_review: s.spec.hold_for_review,
        jitter: Span::millis(s.spec.jitter_ms.max(0) as u64).to_string(),
        misfire: s.spec.misfire,
        misfire_window: Span::millis(s.spec.misfire_window_ms.max(0) as u64).to_string(),
        next_fire_at: s.next_fire_at.map(ts),
        last_fire_at: s.last_fire_at.map(ts),
        skipped_total: s.skipped_total,
        burst: s.spec.burst.clone(),
        upcoming,
    }
}

/// A time in a zone, as people read it: `2026-11-23T08:00:00+01:00[Europe/Berlin]`.
fn local(ms: i64, tz: &TimeZone) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned(tz.clone()).to_string())
        .unwrap_or_default()
}

fn body_limit(state: &AppState) -> usize {
    state.config.render.max_data_size.as_usize() + (64 << 10)
}

async fn read_draft(state: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<Draft> {
    let bytes = extract::body(body, body_limit(state), "render.max_data_size").await?;
    Ok(extract::json::<ScheduleRequest>(headers, &bytes)?.into())
}

/// `GET /api/v1/schedules` (editors).
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<ScheduleView>>> {
    p.require(UserRole::Editor)?;
    let list = state.schedules.list().await?;
    Ok(Json(list.iter().map(schedule_view).collect()))
}

/// `POST /api/v1/schedules` (editors).
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    p.require(UserRole::Editor)?;
    let draft = read_draft(&state, &headers, body).await?;
    let s = state.schedules.create(draft, &p.user.id).await?;
    tracing::info!(schedule = %s.spec.name, cron = %s.spec.cron, by = %p.user.email, "schedule created");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/schedules/{}", s.id))],
        Json(schedule_view(&s)),
    )
        .into_response())
}

/// `GET /api/v1/schedules/{id or name}` (editors).
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ScheduleView>> {
    p.require(UserRole::Editor)?;
    Ok(Json(schedule_view(&state.schedules.get(&id).await?)))
}

/// `PUT /api/v1/schedules/{id}` (editors).
pub async fn update(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ScheduleView>> {
    p.require(UserRole::Editor)?;
    let draft = read_draft(&state, &headers, body).await?;
    Ok(Json(schedule_view(
        &state.schedules.update(&id, draft).await?,
    )))
}

/// `DELETE /api/v1/schedules/{id}` (editors).
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require(UserRole::Editor)?;
    state.schedules.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?cron=&timezone=&count=` of the cron preview.
#[derive(Deserialize)]
pub struct PreviewQuery {
    cron: String,
    #[serde(default = "utc")]
    timezone: String,
    count: Option<usize>,
}

/// The next fire times of an expression, for the schedule form.
pub async fn preview(_p: Principal, ApiQuery(q): ApiQuery<PreviewQuery>) -> ApiResult<Json<Value>> {
    let count = q.count.unwrap_or(5).clamp(1, 50);
    let (cron, upcoming) = service::upcoming(&q.cron, &q.timezone, count)?;
    Ok(Json(
        json!({"cron": cron, "timezone": q.timezone, "upcoming": upcoming}),
    ))
}
