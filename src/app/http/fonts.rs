//! Fonts: list what renders can use, upload into the font directory, remove.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::extract::{self, ApiPath};
use super::problem::{ApiResult, Problem};
use crate::app::auth::Principal;
use crate::app::fonts::FaceEntry;
use crate::app::model::UserRole;
use crate::app::state::AppState;

/// The faces renders can use and the directory files skipped; the directory's path is the
/// server's business, shown to admins only.
pub async fn list(State(state): State<AppState>, p: Principal) -> Json<Value> {
    let catalog = state.fonts.list();
    let faces: Vec<Value> = catalog.faces.iter().map(face_json).collect();
    let skipped: Vec<Value> = catalog
        .skipped
        .iter()
        .map(|s| json!({"file": s.file, "reason": s.reason}))
        .collect();
    let mut body = json!({"faces": faces, "skipped": skipped});
    if p.user.role >= UserRole::Admin {
        body["dir"] = json!(state.fonts.dir().display().to_string());
    }
    Json(body)
}

/// A face: family, style, weight, `source` (`bundled` or `directory`) and, for directory fonts,
/// the `file` within the directory.
fn face_json(f: &FaceEntry) -> Value {
    let mut v =
        json!({"family": f.family, "style": f.style, "weight": f.weight, "source": f.source});
    if let Some(file) = &f.file {
        v["file"] = json!(file);
    }
    v
}

/// `PUT /api/v1/fonts/{file name}` with the font file as the body.
pub async fn upload(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(name): ApiPath<String>,
    body: Body,
) -> ApiResult<Response> {
    p.require(UserRole::Editor)?;
    let limit = state.config.fonts.max_upload_size.as_usize();
    let bytes = extract::body(body, limit, "fonts.max_upload_size").await?;
    let faces = state.fonts.upload(name.clone(), bytes).await?;
    tracing::info!(font = %name, faces, by = %p.user.email, "font installed");
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "faces": faces})),
    )
        .into_response())
}

/// `DELETE /api/v1/fonts/{file}` (editors).
pub async fn remove(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require(UserRole::Editor)?;
    if state.fonts.delete(name.clone()).await? {
        tracing::info!(font = %name, by = %p.user.email, "font removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("font {name}")))
    }
}
