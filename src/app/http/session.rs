//! Signing in and out: `POST /api/v1/auth/login` with `{email, password}` answers with the
//! session cookie and the CSRF token the console echoes on every change.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::session_cookie;
use super::extract;
use super::problem::{ApiResult, Problem};
use super::views::{UserView, ts};
use crate::app::auth::accounts::SignedIn;
use crate::app::auth::{Principal, Via};
use crate::app::state::AppState;

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

/// `POST /api/v1/auth/login`: the session cookie and CSRF token, within the sign-in limits.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let bytes = extract::body(body, 64 * 1024, "sign-in requests").await?;
    let req: Login = extract::json(&headers, &bytes)?;
    let trusted = &state.config.http.trusted_proxies;
    let ip = extract::client_ip(peer, &headers, trusted);
    let SignedIn {
        user,
        session,
        secret,
    } = state.accounts.sign_in(&req.email, req.password, ip).await?;
    let ttl = state.accounts.session_ttl();
    let secure = state
        .config
        .http
        .secure_cookies
        .unwrap_or_else(|| extract::is_https(peer, &headers, trusted));
    let cookie = session_cookie(&secret, ttl.as_secs(), secure);
    let body = json!({
        "user": UserView::from(&user),
        "csrf_token": session.csrf_token,
        "expires_at": ts(session.expires_at),
    });
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(Problem::internal)?,
    );
    Ok(resp)
}

/// `POST /api/v1/auth/logout`: ends the session and clears its cookie.
pub async fn logout(State(state): State<AppState>, principal: Principal) -> ApiResult<Response> {
    if let Via::Session { token_hash, .. } = &principal.via {
        state.accounts.sign_out(token_hash).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let expired = format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        super::auth::SESSION_COOKIE
    );
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&expired).map_err(Problem::internal)?,
    );
    Ok(resp)
}

/// `GET /api/v1/auth/me`: the caller, and the CSRF token of a session.
pub async fn me(principal: Principal) -> Json<serde_json::Value> {
    let csrf = match &principal.via {
        Via::Session { csrf, .. } => Some(csrf.clone()),
        Via::Token { .. } => None,
    };
    Json(json!({"user": UserView::from(&principal.user), "csrf_token": csrf}))
}
