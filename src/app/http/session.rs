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
use crate::app::auth::{Principal, Via, normalize_email, password, token};
use crate::app::model::{Session, millis, now_ms};
use crate::app::state::AppState;

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let bytes = extract::body(body, 64 * 1024, "sign-in requests").await?;
    let req: Login = extract::json(&headers, &bytes)?;
    let email = normalize_email(&req.email)
        .ok_or_else(|| Problem::invalid("email", "not an email address"))?;
    let trusted = &state.config.http.trusted_proxies;
    let ip = extract::client_ip(peer, &headers, trusted);
    // Reserved before the check, so parallel guesses count against the limit while in flight.
    let attempt = state
        .limiter
        .begin(ip, &email)
        .map_err(|r| rate_limited(r.retry_after_secs))?;
    tokio::time::sleep(attempt.delay).await;
    let user = state
        .store
        .user_by_email(&email)
        .await?
        .filter(|u| !u.disabled);
    let hash = user.as_ref().map_or_else(
        || password::DUMMY_HASH.to_owned(),
        |u| u.password_hash.clone(),
    );
    let ok = match password::verify_blocking(req.password, hash).await {
        Ok(ok) => ok,
        Err(password::Busy) => {
            // Not a guess that was checked: release it without counting a failure.
            attempt.not_checked();
            return Err(rate_limited(1));
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        attempt.failed();
        tracing::info!(email = %email, ip = %ip, "failed sign-in");
        return Err(Problem::unauthorized("wrong email or password"));
    };
    attempt.succeeded();
    let secret = token::secret();
    let now = now_ms();
    let ttl = state.config.auth.session_ttl.get();
    let session = Session {
        token_hash: token::digest(&secret),
        user_id: user.id.clone(),
        csrf_token: token::secret(),
        created_at: now,
        expires_at: now.saturating_add(millis(ttl)),
    };
    state.store.create_session(&session).await?;
    tracing::info!(email = %email, ip = %ip, "signed in");
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

fn rate_limited(retry_after_secs: u64) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "too many sign-ins; wait and try again",
    )
    .retry_after(retry_after_secs)
}

pub async fn logout(State(state): State<AppState>, principal: Principal) -> ApiResult<Response> {
    if let Via::Session { token_hash, .. } = &principal.via {
        state.store.delete_session(token_hash).await?;
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

pub async fn me(principal: Principal) -> Json<serde_json::Value> {
    let csrf = match &principal.via {
        Via::Session { csrf, .. } => Some(csrf.clone()),
        Via::Token { .. } => None,
    };
    Json(json!({"user": UserView::from(&principal.user), "csrf_token": csrf}))
}
