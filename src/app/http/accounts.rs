//! Users (admins manage them) and personal API tokens (everyone manages their own).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::extract::{self, ApiPath};
use super::problem::{ApiResult, Problem};
use super::views::{TokenView, UserView, ts};
use crate::app::auth::Principal;
use crate::app::auth::accounts::UserPatch as Patch;
use crate::app::model::UserRole;
use crate::app::state::AppState;

const SMALL_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
struct NewUserRequest {
    email: String,
    password: String,
    #[serde(default = "viewer")]
    role: UserRole,
}

fn viewer() -> UserRole {
    UserRole::Viewer
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    role: Option<UserRole>,
    password: Option<String>,
    disabled: Option<bool>,
    /// With a new password: also revoke the user's API tokens (the default), since whoever
    /// knew the old password may have made one.
    #[serde(default = "yes")]
    revoke_tokens: bool,
}

fn yes() -> bool {
    true
}

/// `GET /api/v1/users` (admins).
pub async fn list_users(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<UserView>>> {
    p.require(UserRole::Admin)?;
    let users = state.accounts.users().await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

/// `POST /api/v1/users` (admins).
pub async fn create_user(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    p.require(UserRole::Admin)?;
    let bytes = extract::body(body, SMALL_BODY, "user requests").await?;
    let req: NewUserRequest = extract::json(&headers, &bytes)?;
    let user = state
        .accounts
        .create_user(&req.email, req.password, req.role)
        .await?;
    tracing::info!(by = %p.user.email, email = %user.email, role = user.role.as_str(), "user created");
    Ok((StatusCode::CREATED, Json(UserView::from(&user))).into_response())
}

/// `PATCH /api/v1/users/{id}`: role, password, disabled (admins).
pub async fn update_user(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<UserView>> {
    p.require(UserRole::Admin)?;
    let bytes = extract::body(body, SMALL_BODY, "user requests").await?;
    let patch: UserPatch = extract::json(&headers, &bytes)?;
    let patch = Patch {
        role: patch.role,
        password: patch.password,
        disabled: patch.disabled,
        revoke_tokens: patch.revoke_tokens,
    };
    let user = state.accounts.update_user(&p.user, &id, patch).await?;
    Ok(Json(UserView::from(&user)))
}

/// `DELETE /api/v1/users/{id}` (admins; never root).
pub async fn delete_user(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require(UserRole::Admin)?;
    state.accounts.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    /// Days until the token stops working; never when absent.
    expires_in_days: Option<u32>,
}

/// `GET /api/v1/tokens`: the caller's tokens, without secrets.
pub async fn list_tokens(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<TokenView>>> {
    let tokens = state.accounts.tokens(&p.user.id).await?;
    Ok(Json(tokens.iter().map(TokenView::from).collect()))
}

/// Creates a personal token; its secret is in this answer only.
pub async fn create_token(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let bytes = extract::body(body, SMALL_BODY, "token requests").await?;
    let req: NewToken = extract::json(&headers, &bytes)?;
    let (t, secret) = state
        .accounts
        .create_token(&p.user.id, &req.name, req.expires_in_days)
        .await?;
    let body = json!({
        "id": t.id,
        "name": t.name,
        "prefix": t.prefix,
        "token": secret,
        "created_at": ts(t.created_at),
        "expires_at": t.expires_at.map(ts),
    });
    // The secret is in this answer only: nothing may cache it.
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

/// `DELETE /api/v1/tokens/{id}`: revokes one of the caller's tokens at once.
pub async fn delete_token(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if state.accounts.delete_token(&p.user.id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("token"))
    }
}
