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
use crate::app::model::{NewVersion, ParamSpec, Role, Template, TemplateFile};
use crate::app::state::AppState;
use crate::app::templates::{self, params};

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "the file's text as a string, or {\"base64\": \"…\"} for binary files"
)]
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

#[derive(Deserialize)]
pub struct VersionRequest {
    #[serde(default = "default_entry")]
    pub entry: String,
    pub files: BTreeMap<String, FileContent>,
    #[serde(default)]
    pub parameters: Vec<ParamSpec>,
    pub sample_data: Option<serde_json::Value>,
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
    params::check_spec(&req.parameters)?;
    let files = decode_files(req.files, &req.entry, max_size)?;
    Ok(NewVersion {
        entry: req.entry,
        parameters: req.parameters,
        sample_data: req.sample_data.map(|v| v.to_string()),
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

fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        && !name.starts_with(' ');
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid(
            "name",
            "1 to 100 letters, digits, spaces, '-', '_' or '.'",
        ))
    }
}

pub async fn list(
    State(state): State<AppState>,
    _p: Principal,
) -> ApiResult<Json<Vec<TemplateView>>> {
    Ok(Json(
        state
            .store
            .templates()
            .await?
            .iter()
            .map(TemplateView::from)
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
    let bytes = extract::body(body, body_limit(&state), "render.max_template_size").await?;
    let req: CreateTemplate = extract::json(&headers, &bytes)?;
    let name = req.name.trim().to_owned();
    check_name(&name)?;
    let version = new_version(
        req.version,
        state.config.render.max_template_size.as_usize(),
        &p,
    )?;
    let (t, v) = state
        .store
        .create_template(&name, req.description.trim(), &version)
        .await?;
    tracing::info!(template = %t.name, by = %p.user.email, "template created");
    let body = json!({"template": TemplateView::from(&t), "version": VersionView::new(&v, None)});
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/templates/{}", t.id))],
        Json(body),
    )
        .into_response())
}

async fn find(state: &AppState, id: &str) -> ApiResult<Template> {
    state
        .store
        .template(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("template {id}")))
}

pub async fn get(
    State(state): State<AppState>,
    _p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let t = find(&state, &id).await?;
    let v = state
        .store
        .version(&t.id, t.latest_version)
        .await?
        .ok_or_else(|| Problem::not_found("latest version"))?;
    let files = state.store.files(&t.id, v.version).await?;
    Ok(Json(
        json!({"template": TemplateView::from(&t), "version": VersionView::new(&v, Some(&files))}),
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
    p.require(Role::Editor)?;
    let bytes = extract::body(body, body_limit(&state), "render.max_template_size").await?;
    let req: UpdateTemplate = extract::json(&headers, &bytes)?;
    let t = find(&state, &id).await?;
    let version = new_version(
        req.version,
        state.config.render.max_template_size.as_usize(),
        &p,
    )?;
    let (t, v) = state
        .store
        .add_version(&t.id, req.description.as_deref().map(str::trim), &version)
        .await?
        .ok_or_else(|| Problem::not_found(format!("template {id}")))?;
    tracing::info!(template = %t.name, version = v.version, by = %p.user.email, "template saved");
    Ok(Json(
        json!({"template": TemplateView::from(&t), "version": VersionView::new(&v, None)}),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require(Role::Editor)?;
    let t = find(&state, &id).await?;
    state.store.delete_template(&t.id).await?;
    tracing::info!(template = %t.name, by = %p.user.email, "template deleted");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn versions(
    State(state): State<AppState>,
    _p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<VersionView>>> {
    let t = find(&state, &id).await?;
    Ok(Json(
        state
            .store
            .versions(&t.id)
            .await?
            .iter()
            .map(|v| VersionView::new(v, None))
            .collect(),
    ))
}

pub async fn version(
    State(state): State<AppState>,
    _p: Principal,
    ApiPath((id, n)): ApiPath<(String, i64)>,
) -> ApiResult<Json<VersionView>> {
    let t = find(&state, &id).await?;
    let v = state
        .store
        .version(&t.id, n)
        .await?
        .ok_or_else(|| Problem::not_found(format!("version {n}")))?;
    let files = state.store.files(&t.id, n).await?;
    Ok(Json(VersionView::new(&v, Some(&files))))
}

/// One file of a version, raw, with a content type from its extension.
pub async fn file(
    State(state): State<AppState>,
    _p: Principal,
    ApiPath((id, n, path)): ApiPath<(String, i64, String)>,
) -> ApiResult<Response> {
    let t = find(&state, &id).await?;
    let files = state.cache.get(state.store.as_ref(), &t.id, n).await?;
    let f = files
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
