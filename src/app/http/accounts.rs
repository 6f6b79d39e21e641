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
use crate::app::auth::{MIN_PASSWORD_LEN, Principal, normalize_email, password, token};
use crate::app::model::{ApiToken, NewUser, Role, UserChanges, now_ms};
use crate::app::state::AppState;

const SMALL_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
struct NewUserRequest {
    email: String,
    password: String,
    #[serde(default = "viewer")]
    role: Role,
}

fn viewer() -> Role {
    Role::Viewer
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    role: Option<Role>,
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

fn check_password(pw: &str) -> ApiResult<()> {
    if pw.chars().count() < MIN_PASSWORD_LEN {
        return Err(Problem::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}

pub async fn list_users(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<UserView>>> {
    p.require(Role::Admin)?;
    Ok(Json(
        state
            .store
            .users()
            .await?
            .iter()
            .map(UserView::from)
            .collect(),
    ))
}

pub async fn create_user(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    p.require(Role::Admin)?;
    let bytes = extract::body(body, SMALL_BODY, "user requests").await?;
    let req: NewUserRequest = extract::json(&headers, &bytes)?;
    let email = normalize_email(&req.email)
        .ok_or_else(|| Problem::invalid("email", "not an email address"))?;
    check_password(&req.password)?;
    let password_hash = password::hash_blocking(req.password)
        .await
        .map_err(Problem::internal)?;
    let user = state
        .store
        .create_user(&NewUser {
            email,
            password_hash,
            role: req.role,
        })
        .await?;
    tracing::info!(by = %p.user.email, email = %user.email, role = user.role.as_str(), "user created");
    Ok((StatusCode::CREATED, Json(UserView::from(&user))).into_response())
}

pub async fn update_user(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<UserView>> {
    p.require(Role::Admin)?;
    let bytes = extract::body(body, SMALL_BODY, "user requests").await?;
    let patch: UserPatch = extract::json(&headers, &bytes)?;
    let target = state
        .store
        .user(&id)
        .await?
        .ok_or_else(|| Problem::not_found("user"))?;
    if target.is_root && !p.user.is_root {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the root user (or the configuration, root_user) changes the root user",
        ));
    }
    if target.is_root
        && (patch.role.is_some_and(|r| r != Role::Admin) || patch.disabled == Some(true))
    {
        return Err(Problem::invalid(
            "role",
            "the root user is managed by the configuration (root_user) and stays an admin",
        ));
    }
    let password_hash = match patch.password {
        Some(pw) => {
            check_password(&pw)?;
            Some(
                password::hash_blocking(pw)
                    .await
                    .map_err(Problem::internal)?,
            )
        }
        None => None,
    };
    let new_password = password_hash.is_some();
    let signs_out = new_password || patch.disabled == Some(true);
    let changes = UserChanges {
        role: patch.role,
        password_hash,
        disabled: patch.disabled,
    };
    let user = state
        .store
        .update_user(&id, &changes)
        .await?
        .ok_or_else(|| Problem::not_found("user"))?;
    if signs_out {
        state.store.delete_user_sessions(&id).await?;
    }
    if new_password && patch.revoke_tokens {
        for t in state.store.tokens(&id).await? {
            state.store.delete_token(&id, &t.id).await?;
        }
    }
    tracing::info!(by = %p.user.email, email = %user.email, new_password, "user changed");
    Ok(Json(UserView::from(&user)))
}

pub async fn delete_user(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require(Role::Admin)?;
    let target = state
        .store
        .user(&id)
        .await?
        .ok_or_else(|| Problem::not_found("user"))?;
    if target.is_root {
        return Err(Problem::invalid(
            "id",
            "the root user is managed by the configuration and cannot be deleted",
        ));
    }
    state.store.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    /// Days until the token stops working; never when absent.
    expires_in_days: Option<u32>,
}

pub async fn list_tokens(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<TokenView>>> {
    Ok(Json(
        state
            .store
            .tokens(&p.user.id)
            .await?
            .iter()
            .map(TokenView::from)
            .collect(),
    ))
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
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(Problem::invalid("name", "must have 1 to 100 characters"));
    }
    let secret = token::api_token();
    let now = now_ms();
    let t = ApiToken {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: p.user.id.clone(),
        name: name.to_owned(),
        prefix: secret.chars().take(8).collect(),
        created_at: now,
        last_used_at: None,
        expires_at: req.expires_in_days.map(|d| now + i64::from(d) * 86_400_000),
    };
    state
        .store
        .create_token(&t, &token::digest(&secret))
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

pub async fn delete_token(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if state.store.delete_token(&p.user.id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("token"))
    }
}
