//! Data sources (`/api/v1/datasources`): admins create, change, delete and test them, and upload
//! CSV sources' files; editors, who write queries against them, may list and read them. Secret
//! settings are write-only.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{self, ApiPath};
use super::problem::{ApiResult, Problem};
use super::views::ts;
use crate::app::auth::Principal;
use crate::app::datasource::model::DataSource;
use crate::app::datasource::service::{Draft, MAX_FILE_SIZE, millis_f64};
use crate::app::model::UserRole;
use crate::app::state::AppState;

const BODY_LIMIT: usize = 256 << 10;

#[derive(Deserialize)]
struct DataSourceRequest {
    name: String,
    kind: String,
    #[serde(default = "empty_object")]
    settings: Value,
}

fn empty_object() -> Value {
    json!({})
}

/// A data source as the API shows it, its secret settings as `"set"`.
fn view(state: &AppState, ds: &DataSource) -> Value {
    json!({
        "id": ds.id,
        "name": ds.name,
        "kind": ds.kind.as_str(),
        "settings": state.datasources.view(ds),
        "created_at": ts(ds.created_at),
        "updated_at": ts(ds.updated_at),
        "created_by": ds.created_by,
        "checked_at": ds.checked_at.map(ts),
        "last_error": ds.last_error,
    })
}

async fn read_draft(headers: &HeaderMap, body: Body) -> ApiResult<Draft> {
    let bytes = extract::body(body, BODY_LIMIT, "data source requests").await?;
    let req: DataSourceRequest = extract::json(headers, &bytes)?;
    Ok(Draft {
        name: req.name,
        kind: req.kind,
        settings: req.settings,
    })
}

/// `GET /api/v1/datasources` (editors and admins).
pub async fn list(State(state): State<AppState>, p: Principal) -> ApiResult<Json<Vec<Value>>> {
    p.require(UserRole::Editor)?;
    let list = state.datasources.list().await?;
    Ok(Json(list.iter().map(|ds| view(&state, ds)).collect()))
}

/// `POST /api/v1/datasources` `{name, kind, settings}` (admins).
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    p.require(UserRole::Admin)?;
    let draft = read_draft(&headers, body).await?;
    let ds = state.datasources.create(draft, &p.user.email).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/datasources/{}", ds.id))],
        Json(view(&state, &ds)),
    )
        .into_response())
}

/// `GET /api/v1/datasources/{id or name}` (editors and admins).
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    p.require(UserRole::Editor)?;
    Ok(Json(view(&state, &state.datasources.get(&id).await?)))
}

/// `PUT /api/v1/datasources/{id or name}`: replaces name, kind and settings (admins).
pub async fn update(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    p.require(UserRole::Admin)?;
    let draft = read_draft(&headers, body).await?;
    Ok(Json(view(
        &state,
        &state.datasources.update(&id, draft).await?,
    )))
}

/// `DELETE /api/v1/datasources/{id or name}` (admins).
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require(UserRole::Admin)?;
    state.datasources.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/datasources/{id}/test`: connects and answers `{ok, server_version,
/// round_trip_ms}` or `{ok: false, error}` (admins).
pub async fn test(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    p.require(UserRole::Admin)?;
    let checked = state.datasources.test(&id).await?;
    let outcome = match &checked.result {
        Ok(probed) => json!({
            "ok": true,
            "server_version": probed.server_version,
            "round_trip_ms": millis_f64(probed.round_trip),
        }),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let mut body = outcome;
    body["datasource"] = view(&state, &checked.datasource);
    Ok(Json(body))
}

/// `PUT /api/v1/datasources/{id or name}/file`: a CSV source's file as the raw body
/// (`text/csv` or `application/octet-stream`), at most 32 MiB; answers `{size, rows, columns}`
/// (admins).
pub async fn upload_file(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    p.require(UserRole::Admin)?;
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    if !matches!(
        media_type.as_deref(),
        Some("text/csv" | "application/octet-stream")
    ) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the file as text/csv or application/octet-stream",
        ));
    }
    let bytes = extract::body(body, MAX_FILE_SIZE, "data source files are at most 32 MiB").await?;
    let uploaded = state
        .datasources
        .upload_file(&id, bytes, &p.user.email)
        .await?;
    Ok(Json(json!({
        "size": uploaded.size,
        "rows": uploaded.rows,
        "columns": uploaded.columns,
    })))
}
