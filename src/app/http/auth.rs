//! Authenticating requests: a Bearer API token, or the console's session cookie — with its CSRF
//! token required on every state-changing request, and a same-origin check on WebSocket upgrades
//! (browsers send cookies cross-site there too).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::problem::{ApiResult, Problem};
use crate::app::auth::{Principal, Via, token};
use crate::app::model::now_ms;
use crate::app::state::AppState;

/// The console session's cookie.
pub const SESSION_COOKIE: &str = "quire_session";
/// The header that carries a session's CSRF token on changes.
pub const CSRF_HEADER: &str = "x-csrf-token";

impl FromRequestParts<AppState> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        authenticate(parts, state).await?.ok_or_else(|| {
            Problem::unauthorized(
                "sign in, or send a personal API token as Authorization: Bearer <token>",
            )
        })
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Problem> {
        authenticate(parts, state).await
    }
}

/// A signed-in console user; anyone else is sent to the sign-in page.
pub struct ConsoleUser(pub Principal);

impl FromRequestParts<AppState> for ConsoleUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match authenticate(parts, state).await {
            Ok(Some(p)) => Ok(ConsoleUser(p)),
            Ok(None) => {
                let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let target = format!(
                    "/login?next={}",
                    percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)
                );
                Err(Redirect::to(&target).into_response())
            }
            Err(p) => Err(p.into_response()),
        }
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> ApiResult<Option<Principal>> {
    let now = now_ms();
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be \"Bearer <token>\"")
            })?;
        return match state
            .store
            .token_user(&token::digest(secret.trim()), now)
            .await?
        {
            Some((t, user)) => Ok(Some(Principal {
                user,
                via: Via::Token { id: t.id },
            })),
            None => Err(Problem::unauthorized(
                "the API token is unknown, expired or revoked",
            )),
        };
    }
    let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some((session, user)) = state.store.session(&token::digest(secret), now).await? else {
        return Ok(None);
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let trusted = peer.is_some_and(|ip| {
        state
            .config
            .http
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&ip))
    });
    check_csrf(parts, &session.csrf_token, trusted)?;
    Ok(Some(Principal {
        user,
        via: Via::Session {
            token_hash: session.token_hash,
            csrf: session.csrf_token,
        },
    }))
}

/// Cookie-authenticated requests that change state must carry the session's CSRF token, which a
/// cross-site page cannot read; WebSocket upgrades must come from our own origin.
/// `from_trusted_proxy`: the peer is one of `http.trusted_proxies`, so its `X-Forwarded-Host`
/// names the host the browser used.
fn check_csrf(parts: &Parts, csrf: &str, from_trusted_proxy: bool) -> ApiResult<()> {
    let changes_state = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !token::same(sent, csrf) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "missing or wrong X-CSRF-Token header (the console sends it; API clients should use a token)",
            ));
        }
    }
    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade && !same_origin(&parts.headers, from_trusted_proxy) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "origin",
            "WebSocket from another origin",
        ));
    }
    Ok(())
}

/// True when there is no Origin (not a browser) or it names the host the request was sent to:
/// `X-Forwarded-Host` when a trusted proxy sent it, else `Host`. Anyone else could name any host
/// in `X-Forwarded-Host` and so pass the check from any origin.
fn same_origin(headers: &HeaderMap, from_trusted_proxy: bool) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let forwarded = headers
        .get("x-forwarded-host")
        .filter(|_| from_trusted_proxy);
    let host = forwarded
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}

/// The value of a cookie.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a session: HttpOnly (scripts cannot read it), SameSite=Lax (not sent on
/// cross-site subrequests), Secure when the client uses HTTPS.
pub fn session_cookie(secret: &str, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; quire_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        h.insert(
            header::HOST,
            HeaderValue::from_static("reports.example.com"),
        );
        assert!(same_origin(&h, false));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://reports.example.com"),
        );
        assert!(same_origin(&h, false));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h, false));
        // X-Forwarded-Host counts only from a trusted proxy.
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        assert!(!same_origin(&h, false));
        assert!(same_origin(&h, true));
        assert!(
            session_cookie("s", 60, true).contains("HttpOnly; SameSite=Lax; Max-Age=60; Secure")
        );
    }
}
