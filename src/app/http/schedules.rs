//! Schedules, their occurrences and deliveries, review of held occurrences, resending mail, the
//! cron preview, and the mail settings.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::extract::{self, ApiPath, ApiQuery};
use super::problem::{ApiResult, Problem};
use super::views::ts;
use crate::app::auth::{Principal, normalize_email};
use crate::app::mail;
use crate::app::model::{
    Mail, MailState, Misfire, Occurrence, Role, Schedule, ScheduleSpec, now_ms,
};
use crate::app::schedule::cron::Cron;
use crate::app::schedule::{next_fire, scheduler};
use crate::app::state::AppState;
use crate::app::templates::params;
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

/// Default misfire window: after downtime, a fire time up to an hour old still runs.
const WINDOW: Span = Span::secs(3600);

async fn spec(state: &AppState, req: ScheduleRequest) -> ApiResult<(ScheduleSpec, Option<i64>)> {
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.len() > 100 {
        return Err(Problem::invalid("name", "must have 1 to 100 characters"));
    }
    let cron: Cron = req
        .cron
        .parse()
        .map_err(|e: crate::app::schedule::cron::CronError| {
            Problem::invalid("cron", e.to_string())
        })?;
    let tz = TimeZone::get(&req.timezone).map_err(|_| {
        Problem::invalid(
            "timezone",
            format!(
                "\"{}\" is not an IANA time zone such as Europe/Berlin",
                req.timezone
            ),
        )
    })?;
    let t =
        state.store.template(&req.template).await?.ok_or_else(|| {
            Problem::invalid("template", format!("no template \"{}\"", req.template))
        })?;
    let v = state
        .store
        .version(&t.id, t.latest_version)
        .await?
        .ok_or_else(|| Problem::not_found("template version"))?;
    let stored = params::resolve(&v.parameters, &req.parameters)?.stored;
    if req.recipients.is_empty() {
        return Err(Problem::invalid("recipients", "at least one recipient"));
    }
    let mut recipients = Vec::with_capacity(req.recipients.len());
    for (i, r) in req.recipients.iter().enumerate() {
        recipients.push(normalize_email(r).ok_or_else(|| {
            Problem::invalid(
                format!("recipients[{i}]"),
                format!("\"{r}\" is not an email address"),
            )
        })?);
    }
    let data = req
        .data
        .map_or_else(|| "{}".to_owned(), |d| d.get().to_owned());
    if data.len() as u64 > state.config.render.max_data_size.bytes() {
        return Err(Problem::too_large(
            "data",
            "larger than render.max_data_size",
        ));
    }
    let jitter = req.jitter.unwrap_or(Span::secs(0));
    if jitter > Span::secs(3600) {
        return Err(Problem::invalid("jitter", "at most 1h"));
    }
    let window = req.misfire_window.unwrap_or(WINDOW);
    if window > Span::secs(30 * 86_400) {
        return Err(Problem::invalid("misfire_window", "at most 30d"));
    }
    let next = if req.enabled {
        next_fire(&cron, &tz, state.store.db_now().await?)
    } else {
        None
    };
    let spec = ScheduleSpec {
        name,
        template_id: t.id,
        template_name: t.name,
        cron: cron.to_string(),
        timezone: req.timezone,
        parameters: Value::Object(stored).to_string(),
        data,
        recipients,
        subject: req.subject,
        body: req.body,
        enabled: req.enabled,
        hold_for_review: req.hold_for_review,
        jitter_ms: jitter.get().as_millis() as i64,
        misfire: req.misfire.unwrap_or(Misfire::Latest),
        misfire_window_ms: window.get().as_millis() as i64,
    };
    Ok((spec, next))
}

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
    /// The next few fire times, in the schedule's zone.
    upcoming: Vec<String>,
}

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

pub async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<ScheduleView>>> {
    p.require(Role::Editor)?;
    Ok(Json(
        state
            .store
            .schedules()
            .await?
            .iter()
            .map(schedule_view)
            .collect(),
    ))
}

pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    p.require(Role::Editor)?;
    let bytes = extract::body(body, body_limit(&state), "render.max_data_size").await?;
    let req: ScheduleRequest = extract::json(&headers, &bytes)?;
    let (spec, next) = spec(&state, req).await?;
    let s = state
        .store
        .create_schedule(&spec, next, Some(&p.user.id))
        .await?;
    tracing::info!(schedule = %s.spec.name, cron = %s.spec.cron, by = %p.user.email, "schedule created");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/schedules/{}", s.id))],
        Json(schedule_view(&s)),
    )
        .into_response())
}

async fn find(state: &AppState, id: &str) -> ApiResult<Schedule> {
    state
        .store
        .schedule(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("schedule {id}")))
}

pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ScheduleView>> {
    p.require(Role::Editor)?;
    Ok(Json(schedule_view(&find(&state, &id).await?)))
}

pub async fn update(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ScheduleView>> {
    p.require(Role::Editor)?;
    let existing = find(&state, &id).await?;
    let bytes = extract::body(body, body_limit(&state), "render.max_data_size").await?;
    let req: ScheduleRequest = extract::json(&headers, &bytes)?;
    let (spec, mut next) = spec(&state, req).await?;
    // Unless when it fires changed, keep its place: recomputing from now could move it back
    // past a fire time the scheduler just ran.
    let same_timing = existing.spec.cron == spec.cron
        && existing.spec.timezone == spec.timezone
        && existing.spec.enabled == spec.enabled;
    if same_timing && existing.next_fire_at.is_some() {
        next = existing.next_fire_at;
    }
    let s = state
        .store
        .update_schedule(&existing.id, &spec, next)
        .await?
        .ok_or_else(|| Problem::not_found("schedule"))?;
    Ok(Json(schedule_view(&s)))
}

pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require(Role::Editor)?;
    let s = find(&state, &id).await?;
    state.store.delete_schedule(&s.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

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

#[derive(Serialize)]
pub struct MailView {
    id: String,
    occurrence: Option<String>,
    recipient: String,
    subject: String,
    state: MailState,
    attempts: i64,
    next_attempt_at: Option<String>,
    last_reply: Option<String>,
    sent_at: Option<String>,
    message_id: String,
}

impl From<&Mail> for MailView {
    fn from(m: &Mail) -> Self {
        MailView {
            id: m.id.clone(),
            occurrence: m.occurrence_id.clone(),
            recipient: m.recipient.clone(),
            subject: m.subject.clone(),
            state: m.state,
            attempts: m.attempts,
            next_attempt_at: (m.state == MailState::Queued).then(|| ts(m.next_attempt_at)),
            last_reply: m.last_reply.clone(),
            sent_at: m.sent_at.map(ts),
            message_id: m.message_id.clone(),
        }
    }
}

async fn occurrence_view(state: &AppState, o: &Occurrence) -> ApiResult<OccurrenceView> {
    let mails = state.store.mails_of(&o.id).await?;
    Ok(OccurrenceView {
        id: o.id.clone(),
        schedule_id: o.schedule_id.clone(),
        fire_at: ts(o.fire_at),
        state: o.state.as_str(),
        pdf: o
            .job_id
            .as_ref()
            .filter(|_| !matches!(o.state, crate::app::model::OccurrenceState::Rendering))
            .map(|j| format!("/api/v1/renders/{j}/pdf")),
        job: o.job_id.clone(),
        error: o.error.clone(),
        reviewed_by: o.reviewed_by.clone(),
        reviewed_at: o.reviewed_at.map(ts),
        term: o.term,
        instance: o.instance.clone(),
        mails: mails.iter().map(MailView::from).collect(),
    })
}

#[derive(Deserialize)]
pub struct Limit {
    limit: Option<i64>,
}

pub async fn occurrences(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<Limit>,
) -> ApiResult<Json<Vec<OccurrenceView>>> {
    p.require(Role::Editor)?;
    let s = find(&state, &id).await?;
    let mut out = Vec::new();
    for o in state
        .store
        .occurrences(&s.id, q.limit.unwrap_or(50).clamp(1, 10_000))
        .await?
    {
        out.push(occurrence_view(&state, &o).await?);
    }
    Ok(Json(out))
}

pub async fn occurrence(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<OccurrenceView>> {
    p.require(Role::Editor)?;
    let o = state
        .store
        .occurrence(&id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("occurrence {id}")))?;
    Ok(Json(occurrence_view(&state, &o).await?))
}

pub async fn approve(
    state: State<AppState>,
    p: Principal,
    id: ApiPath<String>,
) -> ApiResult<Json<OccurrenceView>> {
    review(state, p, id, true).await
}

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
    p.require(Role::Editor)?;
    let o = state
        .store
        .occurrence(&id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("occurrence {id}")))?;
    let s = find(&state, &o.schedule_id).await?;
    let rendered = crate::app::model::Rendered {
        occurrence: o,
        schedule: s.clone(),
        job_state: crate::app::model::JobState::Succeeded,
        job_error: None,
    };
    let from = scheduler::sender(state.store.as_ref(), &state.config.mail, &state.sealer).await;
    let mails = scheduler::mails_for(&s, &rendered, from.as_deref());
    let reviewed = state
        .store
        .review_occurrence(&id, approve, &p.user.email, &mails)
        .await?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::CONFLICT,
                "not-held",
                "the occurrence is not waiting for review",
            )
        })?;
    if approve {
        state.bus.wake_mail();
    }
    tracing::info!(occurrence = %id, approve, by = %p.user.email, "occurrence reviewed");
    Ok(Json(occurrence_view(&state, &reviewed).await?))
}

#[derive(Deserialize)]
pub struct DeliveryQuery {
    state: Option<String>,
    limit: Option<i64>,
}

pub async fn deliveries(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<Vec<MailView>>> {
    p.require(Role::Editor)?;
    let filter = q
        .state
        .as_deref()
        .map(|s| {
            MailState::parse(s).ok_or_else(|| {
                Problem::invalid("state", format!("one of {}", MailState::NAMES.join(", ")))
            })
        })
        .transpose()?;
    let mails = state
        .store
        .mails(filter, q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    Ok(Json(mails.iter().map(MailView::from).collect()))
}

pub async fn resend(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<MailView>> {
    p.require(Role::Editor)?;
    let m = state.store.resend_mail(&id).await?.ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "not-resendable",
            "only sent or failed mails can be sent again",
        )
    })?;
    state.bus.wake_mail();
    Ok(Json(MailView::from(&m)))
}

#[derive(Deserialize)]
pub struct PreviewQuery {
    cron: String,
    #[serde(default = "utc")]
    timezone: String,
    count: Option<usize>,
}

/// The next fire times of an expression, for the schedule form.
pub async fn preview(_p: Principal, ApiQuery(q): ApiQuery<PreviewQuery>) -> ApiResult<Json<Value>> {
    let cron: Cron = q
        .cron
        .parse()
        .map_err(|e: crate::app::schedule::cron::CronError| {
            Problem::invalid("cron", e.to_string())
        })?;
    let tz = TimeZone::get(&q.timezone).map_err(|_| {
        Problem::invalid(
            "timezone",
            format!("\"{}\" is not an IANA time zone", q.timezone),
        )
    })?;
    let now = jiff::Timestamp::from_millisecond(now_ms()).unwrap_or_default();
    let upcoming: Vec<String> = cron
        .upcoming(now, &tz, q.count.unwrap_or(5).clamp(1, 50))
        .into_iter()
        .map(|t| t.to_zoned(tz.clone()).to_string())
        .collect();
    Ok(Json(
        json!({"cron": cron.to_string(), "timezone": q.timezone, "upcoming": upcoming}),
    ))
}

#[derive(Deserialize)]
struct MailSettingsRequest {
    smtp_url: String,
    from: String,
}

pub async fn mail_settings(State(state): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.require(Role::Admin)?;
    let current = mail::settings(state.store.as_ref(), &state.config.mail, &state.sealer).await;
    Ok(Json(match current {
        Ok(Some(s)) => json!({
            "source": s.source,
            "host": s.smtp.host,
            "port": s.smtp.port,
            "tls": s.smtp.tls,
            "user": s.smtp.user,
            "from": s.from,
            "editable": s.source != "config",
        }),
        Ok(None) => json!({"source": "none", "editable": true}),
        Err(e) => {
            json!({"source": "error", "error": e.to_string(), "editable": state.config.mail.smtp_url.is_none()})
        }
    }))
}

pub async fn save_mail_settings(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    p.require(Role::Admin)?;
    if state.config.mail.smtp_url.is_some() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "configured",
            "mail is set in the configuration (mail.smtp_url); change it there",
        ));
    }
    let bytes = extract::body(body, 16 << 10, "mail settings").await?;
    let req: MailSettingsRequest = extract::json(&headers, &bytes)?;
    mail::save_settings(
        state.store.as_ref(),
        &state.sealer,
        &req.smtp_url,
        &req.from,
    )
    .await
    .map_err(|e| match e {
        mail::MailError::Url(m) => Problem::invalid("smtp_url", m),
        mail::MailError::From(m) => {
            Problem::invalid("from", format!("\"{m}\" is not an email address"))
        }
        mail::MailError::Seal(s) => Problem::new(StatusCode::CONFLICT, "no-key", s.to_string()),
        mail::MailError::Store(s) => s.into(),
    })?;
    tracing::info!(by = %p.user.email, "mail settings saved");
    Ok(StatusCode::NO_CONTENT)
}
