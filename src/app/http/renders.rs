//! Renders: queued jobs (`POST /api/v1/renders` -> 202), their status, PDF and cancellation; the
//! synchronous `POST /api/v1/render` that answers with the PDF; and `POST /api/v1/preview`, the
//! editor's live preview of unsaved files as SVG pages.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::extract::{self, ApiPath, ApiQuery};
use super::problem::{ApiResult, Problem};
use super::templates::{FileContent, decode_files};
use super::views::{JobView, ts};
use crate::app::auth::Principal;
use crate::app::model::{
    Job, JobFilter, JobState, NewJob, QuerySpec, Template, TemplateVersion, UserRole,
};
use crate::app::render::{Artifact, Format, Input, RenderJob};
use crate::app::state::AppState;
use crate::app::templates::queries::Context;
use crate::app::templates::{self, params};

#[derive(Deserialize)]
struct RenderRequest {
    /// Template id or name.
    template: String,
    /// Defaults to the latest version.
    version: Option<i64>,
    data: Option<Box<RawValue>>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// A render request checked against its template: what to run and what to store.
struct Resolved {
    template: Template,
    version: TemplateVersion,
    data: String,
    inputs: BTreeMap<String, Input>,
    parameters: Map<String, Value>,
}

fn body_limit(state: &AppState) -> usize {
    state.config.render.max_data_size.as_usize() + (256 << 10)
}

async fn read_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<RenderRequest> {
    let bytes = extract::body(body, body_limit(state), "render.max_data_size").await?;
    extract::json(headers, &bytes)
}

async fn resolve(state: &AppState, req: RenderRequest) -> ApiResult<Resolved> {
    let template =
        state.templates.find(&req.template).await?.ok_or_else(|| {
            Problem::invalid("template", format!("no template \"{}\"", req.template))
        })?;
    let n = req.version.unwrap_or(template.latest_version);
    let version = state
        .templates
        .find_version(&template, n)
        .await?
        .ok_or_else(|| {
            Problem::invalid(
                "version",
                format!("template {} has no version {n}", template.name),
            )
        })?;
    let data = req
        .data
        .map_or_else(|| "{}".to_owned(), |raw| raw.get().to_owned());
    let limit = state.config.render.max_data_size;
    if data.len() as u64 > limit.bytes() {
        return Err(Problem::too_large(
            "data",
            format!(
                "data has {} bytes; render.max_data_size is {limit}",
                data.len()
            ),
        ));
    }
    let params::Resolved {
        inputs,
        stored: parameters,
    } = params::resolve(&version.parameters, &req.parameters)?;
    Ok(Resolved {
        template,
        version,
        data,
        inputs,
        parameters,
    })
}

/// Queues a render; 202 with the job, whose `links.events` streams its progress.
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let req = read_request(&state, &headers, body).await?;
    let mut r = resolve(&state, req).await?;
    Context::asked_now(&p.user.email).store_into(&mut r.parameters);
    let job = NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        template_id: r.template.id.clone(),
        template_name: r.template.name.clone(),
        template_version: r.version.version,
        data: r.data,
        parameters: Value::Object(r.parameters).to_string(),
        created_by: Some(p.user.id.clone()),
        agent_sources: None,
    };
    let limit = i64::from(state.config.render.queue_limit);
    let job = state.jobs.enqueue(job, &r.version.queries, limit).await?;
    let location = format!("/api/v1/renders/{}", job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(JobView::from(&job)),
    )
        .into_response())
}

/// `?state=&template=&before=&limit=` of the renders list.
#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    template: Option<String>,
    /// RFC 3339 time: jobs created before it (for paging).
    before: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/renders`: jobs, newest first; viewers see their own.
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<JobView>>> {
    let job_state = q
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                Problem::invalid("state", format!("one of {}", JobState::NAMES.join(", ")))
            })
        })
        .transpose()?;
    let template_id = match q.template {
        Some(t) => Some(state.templates.find(&t).await?.map(|t| t.id).unwrap_or(t)),
        None => None,
    };
    let before = q
        .before
        .as_deref()
        .map(|b| {
            b.parse::<jiff::Timestamp>()
                .map(|t| t.as_millisecond())
                .map_err(|_| Problem::invalid("before", "an RFC 3339 time"))
        })
        .transpose()?;
    let filter = JobFilter {
        created_by: (!p.sees_all_jobs()).then(|| p.user.id.clone()),
        state: job_state,
        template_id,
        before,
        limit: q.limit.unwrap_or(50).clamp(1, 500),
    };
    Ok(Json(
        state
            .store
            .jobs(&filter)
            .await?
            .iter()
            .map(JobView::from)
            .collect(),
    ))
}

/// The job, if it exists and the caller may see it.
pub async fn visible_job(state: &AppState, p: &Principal, id: &str) -> ApiResult<Job> {
    let job = state
        .store
        .job(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("render {id}")))?;
    if !p.sees_all_jobs() && job.created_by.as_deref() != Some(p.user.id.as_str()) {
        return Err(Problem::not_found(format!("render {id}")));
    }
    Ok(job)
}

/// `GET /api/v1/renders/{id}`: a job's status.
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(JobView::from(&visible_job(&state, &p, &id).await?)))
}

/// `GET /api/v1/renders/{id}/pdf`: the finished PDF (409 before).
pub async fn pdf(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let job = visible_job(&state, &p, &id).await?;
    if job.state != JobState::Succeeded {
        let detail = match job.state {
            JobState::Queued | JobState::Running => {
                "the render has not finished yet; follow its events".to_owned()
            }
            s => format!("the render {}; there is no PDF", s.as_str()),
        };
        return Err(
            Problem::new(StatusCode::CONFLICT, "no-pdf", detail).with("state", json!(job.state))
        );
    }
    let bytes = state
        .store
        .output(&id)
        .await?
        .ok_or_else(|| Problem::not_found("PDF (expired)"))?;
    Ok(pdf_response(
        &job.template_name,
        bytes,
        job.pages.unwrap_or(0),
    ))
}

fn pdf_response(name: &str, bytes: Vec<u8>, pages: i64) -> Response {
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}.pdf\""),
            ),
            (
                header::HeaderName::from_static("x-quire-pages"),
                pages.to_string(),
            ),
            // Reports hold customers' data: no shared or browser cache keeps a copy.
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        bytes,
    )
        .into_response()
}

/// `DELETE /api/v1/renders/{id}`: cancels a job; a running render's worker is stopped.
pub async fn cancel(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobView>> {
    let job = visible_job(&state, &p, &id).await?;
    if job.state.is_final() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "finished",
            format!("the render already {}", job.state.as_str()),
        ));
    }
    let job = state
        .jobs
        .cancel(&id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("render {id}")))?;
    Ok(Json(JobView::from(&job)))
}

/// Renders now and answers with the PDF; for small reports where a job is overhead.
pub async fn render_now(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if state.shutdown.is_draining() {
        return Err(Problem::draining());
    }
    let req = read_request(&state, &headers, body).await?;
    let r = resolve(&state, req).await?;
    let files = state
        .templates
        .files(&r.template, r.version.version)
        .await?;
    let job = templates::job(
        &r.version,
        &files,
        r.data.into_bytes(),
        r.inputs,
        Format::Pdf,
    );
    let rendered = state
        .jobs
        .render_now(
            "sync",
            job,
            &r.version.queries,
            &Context::asked_now(&p.user.email),
            &r.template.name,
        )
        .await?;
    match rendered.artifact {
        Artifact::Pdf(bytes) => Ok(pdf_response(&r.template.name, bytes, rendered.pages as i64)),
        Artifact::Svg(_) => Err(Problem::internal("asked for a PDF, got SVG")),
    }
}

#[derive(Deserialize)]
struct PreviewRequest {
    /// A saved template to preview (its latest version), unless `files` are given.
    template: Option<String>,
    files: Option<BTreeMap<String, FileContent>>,
    #[serde(default = "main_typ")]
    entry: String,
    data: Option<Box<RawValue>>,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    declared: Vec<crate::app::model::ParamSpec>,
    /// The editor's queries, run for real (truncated past the limits); a saved template's
    /// own when `files` are not given.
    #[serde(default)]
    queries: Vec<QuerySpec>,
    #[serde(default = "five")]
    max_pages: usize,
}

fn main_typ() -> String {
    "main.typ".to_owned()
}

fn five() -> usize {
    5
}

/// SVG pages of unsaved (or saved) template files, for the editor's live preview.
pub async fn preview(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    p.require(UserRole::Editor)?;
    let limit = state.config.render.max_template_size.as_usize() * 4 / 3 + body_limit(&state);
    let bytes = extract::body(body, limit, "render.max_template_size").await?;
    let req: PreviewRequest = extract::json(&headers, &bytes)?;
    let data = req
        .data
        .map_or_else(|| b"{}".to_vec(), |d| d.get().as_bytes().to_vec());
    let (files, entry, declared, queries) = match (req.files, req.template) {
        (Some(files), _) => (
            decode_files(
                files,
                &req.entry,
                state.config.render.max_template_size.as_usize(),
            )?,
            req.entry,
            req.declared,
            req.queries,
        ),
        (None, Some(t)) => {
            let t = state
                .templates
                .find(&t)
                .await?
                .ok_or_else(|| Problem::invalid("template", "no such template"))?;
            let (_, v) = state.templates.version(&t.id, None).await?;
            let version = v.version;
            (
                v.files.to_vec(),
                version.entry,
                version.parameters,
                version.queries,
            )
        }
        (None, None) => return Err(Problem::invalid("files", "give files or a template")),
    };
    let inputs = params::resolve(&declared, &req.parameters)?.inputs;
    let job = RenderJob {
        entry,
        files: files.into_iter().map(|f| (f.path, f.content)).collect(),
        data,
        inputs,
        format: Format::Svg {
            max_pages: req.max_pages.clamp(1, 20),
        },
    };
    let rendered = state
        .jobs
        .render_now(
            "preview",
            job,
            &queries,
            &Context::asked_now(&p.user.email),
            "(preview)",
        )
        .await?;
    let Artifact::Svg(pages) = rendered.artifact else {
        return Err(Problem::internal("asked for SVG, got PDF"));
    };
    Ok(Json(json!({
        "pages": rendered.pages,
        "svg": pages,
        "warnings": rendered.warnings,
        "at": ts(crate::app::model::now_ms()),
    })))
}
