//! Templates: create, save new versions, list, fetch, delete.
//!
//! Files travel as `{"files": {"main.typ": "…text…", "logo.png": {"base64": "…"}}}`.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::extract::{self, ApiPath};
use super::problem::{ApiResult, Problem};
use super::views::{TemplateView, VersionView};
use crate::app::auth::Principal;
use crate::app::model::{NewVersion, ParamSpec, QuerySpec, TemplateFile, UserRole};
use crate::app::state::AppState;
use crate::app::templates;

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "the file's text as a string, or {\"base64\": \"…\"} for binary files"
)]
/// A file as sent: text, or base64 for binary files.
pub enum FileContent {
    Text(String),
    Base64 { base64: String },
}

#[derive(Deserialize)]
struct CreateTemplate {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(flatten)]
    version: VersionRequest,
}

#[derive(Deserialize)]
struct UpdateTemplate {
    description: Option<String>,
    #[serde(flatten)]
    version: VersionRequest,
}

/// What a new version carries: entry, files, declared parameters, sample data.
#[derive(Deserialize)]
pub struct VersionRequest {
    #[serde(default = "default_entry")]
    pub entry: String,
    pub files: BTreeMap<String, FileContent>,
    #[serde(default)]
    pub parameters: Vec<ParamSpec>,
    pub sample_data: Option<serde_json::Value>,
    #[serde(default)]
    pub queries: Vec<QuerySpec>,
}

fn default_entry() -> String {
    "main.typ".to_owned()
}

/// Decodes and checks the files of a submitted version.
pub fn decode_files(
    files: BTreeMap<String, FileContent>,
    entry: &str,
    max_size: usize,
) -> ApiResult<Vec<TemplateFile>> {
    let mut out = Vec::with_capacity(files.len());
    for (path, content) in files {
        let content = match content {
            FileContent::Text(t) => t.into_bytes(),
            FileContent::Base64 { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64.trim())
                .map_err(|e| {
                    Problem::invalid(format!("files.{path}"), format!("invalid base64: {e}"))
                })?,
        };
        out.push(TemplateFile { path, content });
    }
    Ok(templates::check_files(out, entry, max_size)?)
}

fn new_version(req: VersionRequest, max_size: usize, by: &Principal) -> ApiResult<NewVersion> {
    let files = decode_files(req.files, &req.entry, max_size)?;
    Ok(NewVersion {
        entry: req.entry,
        parameters: req.parameters,
        sample_data: req.sample_data.map(|v| v.to_string()),
        queries: req.queries,
        files,
        created_by: Some(by.user.email.clone()),
    })
}

/// Request bodies carry files as text or base64 (4/3 larger), plus JSON around them.
fn body_limit(state: &AppState) -> usize {
    state
        .config
        .render
        .max_template_size
        .as_usize()
        .saturating_mul(4)
        / 3
        + (1 << 20)
}

/// `GET /api/v1/templates`.
pub async fn list(
    State(state): State<AppState>,
    _p: Principal,
) -> ApiResult<Json<Vec<TemplateView>>> {
    let list = state.templates.list().await?;
    Ok(Json(list.iter().map(TemplateView::from).collect()))
}

/// `POST /api/v1/templates`: a template with its first version (editors).
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    p.require(UserRole::Editor)?;
    let bytes = extract::body(body, body_limit(&state), "render.max_template_size").await?;
    let req: CreateTemplate = extract::json(&headers, &bytes)?;
    let version = new_version(
        req.version,
        state.config.render.max_template_size.as_usize(),
        &p,
    )?;
    let (t, v) = state
        .templates
        .create(&req.name, &req.description, &version)
        .await?;
    tracing::info!(template = %t.name, by = %p.user.email, "template created");
    let body = json!({"template": TemplateView::from(&t), "version": VersionView::new(&v, None, p.user.role)});
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/templates/{}", t.id))],
        Json(body),
    )
        .into_response())
}

/// `GET /api/v1/templates/{id or name}`: the latest version with its files.
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let (t, v) = state.templates.version(&id, None).await?;
    Ok(Json(
        json!({"template": TemplateView::from(&t), "version": VersionView::new(&v.version, Some(&v.files), p.user.role)}),
    ))
}

/// Saves a new version (versions are immutable; renders pin the one they used).
pub async fn update(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    p.require(UserRole::Editor)?;
    let bytes = extract::body(body, body_limit(&state), "render.max_template_size").await?;
    let req: UpdateTemplate = extract::json(&headers, &bytes)?;
    let version = new_version(
        req.version,
        state.config.render.max_template_size.as_usize(),
        &p,
    )?;
    let (t, v) = state
        .templates
        .save(&id, req.description.as_deref(), &version)
        .await?;
    tracing::info!(template = %t.name, version = v.version, by = %p.user.email, "template saved");
    Ok(Json(
        json!({"template": TemplateView::from(&t), "version": VersionView::new(&v, None, p.user.role)}),
    ))
}

/// `DELETE /api/v1/templates/{id or name}` (editors).
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require(UserRole::Editor)?;
    let t = state.templates.delete(&id).await?;
    tracing::info!(template = %t.name, by = %p.user.email, "template deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/templates/{id}/versions`.
pub async fn versions(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<VersionView>>> {
    let versions = state.templates.versions(&id).await?;
    Ok(Json(
        versions
            .iter()
            .map(|v| VersionView::new(v, None, p.user.role))
            .collect(),
    ))
}

/// `GET /api/v1/templates/{id}/versions/{n}`: one version with its files.
pub async fn version(
    State(state): State<AppState>,
    p: Principal,
    ApiPath((id, n)): ApiPath<(String, i64)>,
) -> ApiResult<Json<VersionView>> {
    let (_, v) = state.templates.version(&id, Some(n)).await?;
    Ok(Json(VersionView::new(
        &v.version,
        Some(&v.files),
        p.user.role,
    )))
}

/// One file of a version, raw, with a content type from its extension.
pub async fn file(
    State(state): State<AppState>,
    _p: Principal,
    ApiPath((id, n, path)): ApiPath<(String, i64, String)>,
) -> ApiResult<Response> {
    let (_, v) = state.templates.version(&id, Some(n)).await?;
    let f = v
        .files
        .iter()
        .find(|f| f.path == path)
        .ok_or_else(|| Problem::not_found(format!("file {path}")))?;
    // Template files are author content: never let the browser run them in Quire's origin (an
    // SVG with a script would otherwise act with the viewer's session).
    let name: String = f
        .path
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"')
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, content_type(&f.path).to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox".to_owned(),
            ),
        ],
        f.content.clone(),
    )
        .into_response())
}

fn content_type(path: &str) -> &'static str {
    match path
        .rsplit('.')
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("typ" | "txt" | "csv") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        _ => "application/octet-stream",
    }
}
