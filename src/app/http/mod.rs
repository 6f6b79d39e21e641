//! The HTTP surface of the app: the JSON API under `/api/v1`, health and metrics, and the web
//! console. Only this module knows the API's JSON shapes; errors become problem documents in
//! `problem.rs`.

mod accounts;
mod agents;
/// Authentication of requests: tokens, sessions, CSRF, WebSocket origins.
pub mod auth;
/// The HA overview and drain requests.
pub mod cluster;
mod datasources;
mod deliveries;
mod events;
/// Reading requests: bodies within limits, JSON with field names, client addresses.
pub mod extract;
mod fonts;
mod health;
/// The licence, its seats and their release.
pub mod license;
mod mail_settings;
mod occurrences;
/// Errors as problem documents.
pub mod problem;
mod queries;
mod renders;
/// Schedules and the cron preview.
pub mod schedules;
mod serve;
mod session;
pub mod standby;
mod templates;
/// JSON shapes shared by several resources.
pub mod views;

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

pub use serve::serve;

use super::metrics::{HttpLabels, RouteLabels};
use super::state::AppState;
use problem::Problem;

/// Every route of the app.
/// The API and health routes, with `pages` (the console, which sits above HTTP and uses it)
/// merged in under the same middleware.
pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    let api = Router::new()
        .route("/auth/login", post(session::login))
        .route("/auth/logout", post(session::logout))
        .route("/auth/me", get(session::me))
        .route(
            "/users",
            get(accounts::list_users).post(accounts::create_user),
        )
        .route(
            "/users/{id}",
            axum::routing::patch(accounts::update_user).delete(accounts::delete_user),
        )
        .route(
            "/tokens",
            get(accounts::list_tokens).post(accounts::create_token),
        )
        .route(
            "/tokens/{id}",
            axum::routing::delete(accounts::delete_token),
        )
        .route("/templates", get(templates::list).post(templates::create))
        .route(
            "/templates/{id}",
            get(templates::get)
                .put(templates::update)
                .delete(templates::delete),
        )
        .route("/templates/{id}/versions", get(templates::versions))
        .route("/templates/{id}/versions/{n}", get(templates::version))
        .route(
            "/templates/{id}/versions/{n}/files/{*path}",
            get(templates::file),
        )
        .route("/renders", get(renders::list).post(renders::create))
        .route("/renders/{id}", get(renders::get).delete(renders::cancel))
        .route("/renders/{id}/pdf", get(renders::pdf))
        .route("/renders/{id}/events", get(events::events))
        .route("/render", post(renders::render_now))
        .route("/preview", post(renders::preview))
        .route(
            "/datasources",
            get(datasources::list).post(datasources::create),
        )
        .route(
            "/datasources/{id}",
            get(datasources::get)
                .put(datasources::update)
                .delete(datasources::delete),
        )
        .route("/datasources/{id}/test", post(datasources::test))
        .route("/agents", get(agents::list).post(agents::create))
        .route("/agents/connect", get(agents::connect))
        .route("/agents/{id}", get(agents::get).delete(agents::delete))
        .route("/queries/run", post(queries::run))
        .route("/datasources/{id}/file", put(datasources::upload_file))
        .route("/fonts", get(fonts::list))
        .route("/fonts/{name}", put(fonts::upload).delete(fonts::remove))
        .route("/schedules", get(schedules::list).post(schedules::create))
        .route(
            "/schedules/{id}",
            get(schedules::get)
                .put(schedules::update)
                .delete(schedules::delete),
        )
        .route("/schedules/{id}/occurrences", get(occurrences::list))
        .route("/occurrences/{id}", get(occurrences::get))
        .route("/occurrences/{id}/approve", post(occurrences::approve))
        .route("/occurrences/{id}/reject", post(occurrences::reject))
        .route("/occurrences/{id}/rows", get(occurrences::rows))
        .route(
            "/occurrences/{id}/rows/{key}/approve",
            post(occurrences::approve_row),
        )
        .route(
            "/occurrences/{id}/rows/{key}/reject",
            post(occurrences::reject_row),
        )
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/{id}/resend", post(deliveries::resend))
        .route("/cron/preview", get(schedules::preview))
        .route(
            "/settings/mail",
            get(mail_settings::get).put(mail_settings::save),
        )
        .route("/cluster", get(cluster::overview))
        .route("/cluster/instances", get(cluster::overview))
        .route("/cluster/instances/{id}/drain", post(cluster::drain))
        .route("/cluster/instances/{id}/resume", post(cluster::resume))
        .route("/license", get(license::get))
        .route("/license/seats/{instance}/release", post(license::release))
        .fallback(|| async { Problem::not_found("API route") });
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/health", get(health::readyz))
        .route("/healthz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v1", api)
        .merge(pages)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and times every request by route, logs failures, and sets headers every answer gets.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Clients choose the method freely; a label per invented method would grow without bound.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    let m = &state.metrics;
    m.http_requests
        .get_or_create(&HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    m.http_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    if status >= 500 {
        tracing::warn!(%method, %route, status, ms = elapsed.as_millis() as u64, "request failed");
    } else {
        tracing::debug!(%method, %route, status, ms = elapsed.as_millis() as u64, "request");
    }
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    resp.into_response()
}
